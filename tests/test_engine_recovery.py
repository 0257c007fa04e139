"""Recovering runs in one process (the Python API and ``cli.main``): ``model.resume auto`` from nothing, from a
finished run and from a trained but untested one, also over splits; a stop in text mode after stage 1 resumed
exactly; a stop in phase 1 leaves the memory cache empty; a failed evaluation keeps the training and prints the
command that evaluates it."""
from __future__ import annotations

import glob
import json
import os
import shlex
import signal

import pytest
import torch

from engine_fixtures import SYNTHVID_SIZE, tiny_config
from tfclip_plugin import stopping
from tfclip_plugin.cli import main
from tfclip_plugin.data import build_datamanager, generate_synthvid
from tfclip_plugin.engine import engine as engine_module
from tfclip_plugin.engine.runner import run_all_splits, run_experiment
from tfclip_plugin.files.checkpoint_file import checkpoint_path, load_checkpoint
from tfclip_plugin.stopping import TrainingStopped

ONE_EPOCH = ("train.max_epoch", "1", "model.resume", "auto")
TEXT = ("tfclip.memory", "text", "tfclip.ssp", "none", "tfclip.text_width", "64", "tfclip.text_layers", "1",
        "tfclip.stage1_epochs", "3", "tfclip.stage1_batch_size", "8")


def handlers():
    return {sig: signal.getsignal(sig) for sig in stopping.STOP_SIGNALS}


def signal_at(monkeypatch, epoch: int, iteration: int, where: str = "forward_backward") -> None:
    """SIGTERM to this process at the start of (1-based) ``epoch``, ``iteration``."""
    original = getattr(engine_module.TFCLIPEngine, where)

    def with_signal(engine, *args):
        if (engine.epoch + 1, engine.batch_idx + 1) == (epoch, iteration):
            os.kill(os.getpid(), signal.SIGTERM)
        return original(engine, *args)

    monkeypatch.setattr(engine_module.TFCLIPEngine, where, with_signal)


def test_auto_starts_fresh_then_finds_the_run_finished_then_tests_only_without_results(data_root, tmp_path, capsys):
    save_dir = str(tmp_path)
    latest = checkpoint_path(save_dir, "latest")
    before = handlers()
    first = run_experiment(tiny_config(data_root, save_dir, *ONE_EPOCH))
    assert handlers() == before  # the Python API leaves no signal handler behind
    out = capsys.readouterr().out
    assert f"model.resume auto: no {latest}; starting from the beginning" in out and "epoch: [1/1]" in out
    assert sorted(os.listdir(save_dir)).count("config.yaml") == 1 and first["results"]["synthvid"]["epoch"] == 1

    logs, written = glob.glob(os.path.join(save_dir, "train.log-*")), os.stat(latest).st_mtime_ns
    again = run_experiment(tiny_config(data_root, save_dir, *ONE_EPOCH))
    assert capsys.readouterr().out.startswith(
        f"model.resume auto: the run in {save_dir} is finished ({latest} holds all 1 epochs, "
        f"{os.path.join(save_dir, 'results.json')} was written after it); not training again")
    assert again == first and glob.glob(os.path.join(save_dir, "train.log-*")) == logs
    assert os.stat(latest).st_mtime_ns == written

    os.remove(os.path.join(save_dir, "results.json"))
    tested = run_experiment(tiny_config(data_root, save_dir, *ONE_EPOCH))
    out = capsys.readouterr().out
    assert f"model.resume auto: resuming from {latest} (all 1 epochs are trained but not tested: testing only)" in out
    assert "epoch: [" not in out and "=> Final test" in out  # no training step
    assert os.stat(latest).st_mtime_ns == written
    assert tested["results"] == first["results"] and tested["epochs"] == 1


def test_text_mode_stopped_after_stage_1_resumes_from_its_checkpoint_exactly(data_root, tmp_path, monkeypatch):
    reference = run_experiment(tiny_config(data_root, str(tmp_path / "continuous"), *TEXT))
    save_dir = str(tmp_path / "stopped")
    with monkeypatch.context() as patch:
        signal_at(patch, epoch=1, iteration=1)
        with pytest.raises(TrainingStopped) as stopped:
            run_experiment(tiny_config(data_root, save_dir, *TEXT, "model.resume", "auto"))
    assert str(stopped.value) == "SIGTERM: training stopped in epoch 1 after iteration 1 of 2"
    assert (stopped.value.checkpoint, stopped.value.checkpoint_epoch) == (checkpoint_path(save_dir, "latest"), 0)

    resumed = run_experiment(tiny_config(data_root, save_dir, *TEXT, "model.resume", "auto"))
    assert resumed["wall_seconds"]["phase1"] == 0.0 and "stage1" not in resumed  # stage 1 was not repeated
    assert resumed["results"] == reference["results"]
    final = load_checkpoint(checkpoint_path(save_dir, "epoch", 2))["state_dict"]
    for name, value in load_checkpoint(checkpoint_path(str(tmp_path / "continuous"), "epoch", 2))["state_dict"].items():
        torch.testing.assert_close(final[name], value, rtol=0, atol=0, msg=name)


def test_a_stop_in_phase_1_leaves_no_memory_cache_entry_and_no_checkpoint(data_root, tmp_path, monkeypatch):
    cache, save_dir = tmp_path / "cache", str(tmp_path / "run")
    build_memory = engine_module.TFCLIPEngine.build_memory

    def signalled(engine):
        os.kill(os.getpid(), signal.SIGTERM)  # recorded; phase 1 stops before its next batch
        return build_memory(engine)

    monkeypatch.setattr(engine_module.TFCLIPEngine, "build_memory", signalled)
    with pytest.raises(TrainingStopped, match="SIGTERM: stopped during phase 1") as stopped:
        run_experiment(tiny_config(data_root, save_dir, "tfclip.memory_cache", str(cache)))
    assert stopped.value.checkpoint is None and stopped.value.resume_command.endswith("model.resume auto")
    assert os.listdir(cache) == [] and os.listdir(os.path.join(save_dir, "model")) == []
    assert sorted(f for f in os.listdir(save_dir) if not f.startswith(("train.log", "events"))) == \
        ["config.yaml", "interrupted.json", "model"]


def test_a_failed_evaluation_keeps_the_training_and_names_the_command_that_tests_it(tmp_path, capsys):
    root, save_dir = str(tmp_path / "data"), str(tmp_path / "run")
    generate_synthvid(root, seed=3, **SYNTHVID_SIZE)
    frame = build_datamanager(tiny_config(root, save_dir)).test_dataset["synthvid"]["query"][0][0][0]
    with open(frame, "rb") as f:
        good = f.read()
    with open(frame, "wb") as f:
        f.write(b"not a jpeg")  # parses (the file exists), fails when the evaluation reads it
    config = str(tmp_path / "tiny.yaml")
    with open(config, "w") as f:
        f.write(tiny_config(root, save_dir, "train.max_epoch", "1").dump())

    assert main(["--config-file", config]) == 1
    latest = checkpoint_path(save_dir, "latest")
    err = capsys.readouterr().err
    assert f"tfclip-reid: error: the evaluation after epoch 1 failed: BadFrameError: cannot read frame {frame}: " in err
    assert f"The trained model is kept in {latest}. Once the data is fixed, evaluate it with:\n  cd " in err
    assert load_checkpoint(latest)["epoch"] == 1 and not os.path.exists(os.path.join(save_dir, "results.json"))

    with open(frame, "wb") as f:
        f.write(good)
    words = shlex.split(err.rstrip().splitlines()[-1])
    assert words[:4] == ["cd", os.getcwd(), "&&", "tfclip-reid"]
    assert words[4:] == ["--config-file", os.path.join(save_dir, "config.yaml"), "test.evaluate", "True",
                         "model.load_weights", latest]
    assert main(words[4:]) == 0
    with open(os.path.join(save_dir, "results.json")) as f:
        results = json.load(f)
    assert results["model_selection"] == f"test only ({latest})" and results["results"]["synthvid"]["num_query"] > 0


def test_auto_over_all_splits_skips_the_finished_splits(data_root, tmp_path, capsys):
    cfg = tiny_config(data_root, str(tmp_path), "tfclip.all_splits", "True", *ONE_EPOCH)
    first = run_all_splits(cfg, num_splits=2)
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "results.json", "split0", "split1"]
    assert all("config.yaml" in os.listdir(tmp_path / f"split{i}") for i in range(2))
    capsys.readouterr()
    os.remove(tmp_path / "split1" / "results.json")  # split 1 trained, not tested
    again = run_all_splits(cfg, num_splits=2)
    out = capsys.readouterr().out
    assert f"model.resume auto: the run in {tmp_path / 'split0'} is finished" in out
    assert "(all 1 epochs are trained but not tested: testing only)" in out and "epoch: [" not in out
    assert again["summary"] == first["summary"]
