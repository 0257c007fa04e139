"""TFCLIPEngine end to end on a small generated synthvid: phase 1, phase 2, checkpoints, resume, selection."""
import glob
import json
import os

import numpy as np
import pytest
import torch
from engine_fixtures import tiny_config
from yacs.config import CfgNode as CN

from tfclip_plugin.files.checkpoint_file import load_checkpoint
from tfclip_plugin.engine import engine as engine_module
from tfclip_plugin.engine.runner import run_single


@pytest.fixture(scope="module")
def two_epochs(data_root, tmp_path_factory):
    """One seeded 2-epoch TF-CLIP run shared by several tests: (results dict, save_dir)."""
    save_dir = str(tmp_path_factory.mktemp("run"))
    return run_single(tiny_config(data_root, save_dir)), save_dir


def test_run_writes_results_checkpoints_outputs_and_log(two_epochs):
    results, save_dir = two_epochs
    with open(os.path.join(save_dir, "results.json")) as f:
        assert json.load(f) == json.loads(json.dumps(results))
    target = results["results"]["synthvid"]
    assert target["protocol"] == "tfclip" and target["test_sampling"] == "dense"
    assert set(target["cmc"]) == {"1", "5", "10", "20"} and 0.0 <= target["mAP"] <= 1.0
    assert target["num_valid_queries"] > 0 and target["epoch"] == 2
    assert results["model_selection"].startswith("last epoch")
    assert results["wall_seconds"]["phase1"] > 0 and results["wall_seconds"]["train"] > 0
    assert set(results["versions"]) == {"torch", "torchreid", "open_clip", "tfclip_plugin"}
    assert sorted(os.listdir(os.path.join(save_dir, "model"))) == ["checkpoint-latest.pth.tar", "model.pth.tar-2"]
    assert len(glob.glob(os.path.join(save_dir, "train.log-*"))) == 1

    with np.load(os.path.join(save_dir, "test_outputs", "synthvid.npz")) as npz:
        assert npz["query_features"].dtype == np.float16 and npz["query_frames"].shape[1] == 4
        norms = np.linalg.norm(npz["gallery_features"].astype(np.float32), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=2e-3)
        assert len(npz["query_pids"]) == target["num_query"] and str(npz["protocol"]) == "tfclip"
        assert target["num_gallery"] == len(npz["query_pids"]) + len(npz["gallery_pids"])  # query + gallery


def test_checkpoint_loads_weights_only_and_carries_memory_config_and_schedule(two_epochs):
    results, save_dir = two_epochs
    path = os.path.join(save_dir, "model", "model.pth.tar-2")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 2 and isinstance(checkpoint["rank1"], float)
    assert checkpoint["rank1"] == pytest.approx(results["results"]["synthvid"]["cmc"]["1"])
    state = checkpoint["state_dict"]
    assert bool(state["memory_ready"]) and state["memory"].shape == (8, 64) and state["memory"].abs().sum() > 0
    assert checkpoint["scheduler"]["last_epoch"] == 2
    rebuilt = CN.load_cfg(checkpoint["config"])
    assert rebuilt.tfclip.vision_width == 64 and list(rebuilt.data.sources) == ["synthvid"]


def test_frozen_parameters_stay_frozen_and_unchanged(two_epochs, data_root, tmp_path):
    from tfclip_plugin.data import build_datamanager
    from tfclip_plugin.engine.build import build_model

    results, save_dir = two_epochs
    cfg = tiny_config(data_root, str(tmp_path))
    torch.manual_seed(cfg.train.seed)
    fresh = build_model(cfg, build_datamanager(cfg))
    frozen = {n for n, p in fresh.named_parameters() if not p.requires_grad}
    assert frozen and all(n.endswith("bias") for n in frozen)  # the BNNeck biases
    trained = load_checkpoint(os.path.join(save_dir, "model", "model.pth.tar-2"))["state_dict"]
    for name in frozen:
        assert torch.equal(trained[name], fresh.state_dict()[name]), name


def test_writer_logs_loss_terms_accuracy_lr_and_test_metrics(two_epochs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, save_dir = two_epochs
    events = EventAccumulator(save_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"Train/loss", "Train/loss_v2m", "Train/loss_id", "Train/loss_tri", "Train/loss_frame",
            "Train/acc_v2m", "Train/lr"} <= tags
    assert {"Test/synthvid/rank1", "Test/synthvid/mAP", "Test/synthvid/mINP"} <= tags
    lrs = [e.value for e in events.Scalars("Train/lr")]
    assert lrs[0] == pytest.approx(3e-5) and lrs[-1] == pytest.approx(3e-4)  # warm-up epoch at 0.1x


def test_resume_continues_the_run_without_rebuilding_the_memory(two_epochs, data_root, tmp_path, monkeypatch):
    _, continuous_dir = two_epochs
    first = run_single(tiny_config(data_root, str(tmp_path / "a"), "train.max_epoch", "1"))
    latest = os.path.join(str(tmp_path / "a"), "model", "checkpoint-latest.pth.tar")
    assert load_checkpoint(latest)["epoch"] == 1 and first["results"]

    def no_memory(*args, **kwargs):
        raise AssertionError("a resumed run must not rebuild the CLIP-Memory")

    monkeypatch.setattr(engine_module, "build_clip_memory", no_memory)
    resumed = run_single(tiny_config(data_root, str(tmp_path / "b"), "model.resume", latest))
    assert resumed["wall_seconds"]["phase1"] == 0.0
    continued = load_checkpoint(os.path.join(str(tmp_path / "b"), "model", "model.pth.tar-2"))
    reference = load_checkpoint(os.path.join(continuous_dir, "model", "model.pth.tar-2"))
    for name, value in reference["state_dict"].items():
        torch.testing.assert_close(continued["state_dict"][name], value, msg=name)
    assert continued["scheduler"]["last_epoch"] == 2


def test_select_on_test_keeps_the_best_checkpoint_and_says_so(data_root, tmp_path):
    results = run_single(tiny_config(data_root, str(tmp_path), "tfclip.select_on_test", "True",
                                     "test.eval_freq", "1"))
    assert results["model_selection"].startswith("TEST-SET selection")
    assert results["best_epoch"] in (1, 2)
    assert os.path.isfile(os.path.join(str(tmp_path), "model", "model-best.pth.tar"))
    assert results["results"]["synthvid"]["test_sampling"] == "dense"  # the final test of the selected model
    log = open(glob.glob(os.path.join(str(tmp_path), "train.log-*"))[0]).read()
    assert "ON THE TEST SET" in log and "rrs sampling" in log


def test_non_finite_loss_names_iteration_and_last_checkpoint(data_root, tmp_path, monkeypatch):
    original_forward, original_parse = engine_module.TFCLIPLoss.forward, engine_module.TFCLIPEngine.parse_data_for_train
    running = {}

    def parse(self, data):
        running["engine"] = self
        return original_parse(self, data)

    def poisoned(self, output, pids):
        terms = original_forward(self, output, pids)
        engine = running["engine"]
        if (engine.epoch, engine.batch_idx) == (1, 1):  # epoch 2, iteration 2
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(engine_module.TFCLIPEngine, "parse_data_for_train", parse)
    monkeypatch.setattr(engine_module.TFCLIPLoss, "forward", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch 2, iteration 2 .*"
                                                 r"last good checkpoint: .*checkpoint-latest\.pth\.tar"):
        run_single(tiny_config(data_root, str(tmp_path), "train.batch_size", "8"))


def test_short_seeded_training_raises_map_well_above_the_untrained_model(data_root, tmp_path):
    # measured on this fixture (CPU, torch 2.14): untrained 0.157, after 10 epochs 0.395 (+0.24)
    untrained = run_single(tiny_config(data_root, str(tmp_path / "u"), "test.evaluate", "True"))
    trained = run_single(tiny_config(data_root, str(tmp_path / "t"), "train.max_epoch", "10",
                                     "train.stepsize", "[100]"))
    before, after = untrained["results"]["synthvid"]["mAP"], trained["results"]["synthvid"]["mAP"]
    assert after >= before + 0.10, (before, after)


def test_memory_cache_is_written_once_and_read_back(data_root, tmp_path):
    cache = str(tmp_path / "cache")
    run_single(tiny_config(data_root, str(tmp_path / "a"), "train.max_epoch", "1", "tfclip.memory_cache", cache))
    assert len(os.listdir(cache)) == 1
    run_single(tiny_config(data_root, str(tmp_path / "b"), "train.max_epoch", "1", "tfclip.memory_cache", cache))
    assert len(os.listdir(cache)) == 1
    log = open(glob.glob(str(tmp_path / "b" / "train.log-*"))[0]).read()
    assert "read from the cache" in log
    memories = [load_checkpoint(str(tmp_path / run / "model" / "model.pth.tar-1"))["state_dict"]["memory"]
                for run in ("a", "b")]
    torch.testing.assert_close(memories[0], memories[1])


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_precision_sets_autocast_and_a_grad_scaler_for_fp16_only(data_root, tmp_path, precision):
    from tfclip_plugin.data import build_datamanager
    from tfclip_plugin.engine.build import build_engine, build_model, build_optimization

    cfg = tiny_config(data_root, str(tmp_path), "tfclip.precision", precision)
    datamanager = build_datamanager(cfg)
    model = build_model(cfg, datamanager)
    engine = build_engine(cfg, datamanager, model, *build_optimization(cfg, model))
    assert (engine.scaler is not None) == (precision == "fp16")
    engine.build_memory()
    model.train()
    engine.epoch, engine.batch_idx = 0, 0
    before = model.cv_embed.detach().clone()
    summary = engine.forward_backward(next(iter(datamanager.train_loader)))
    assert np.isfinite(summary["loss"]) and 0.0 <= summary["acc_v2m"] <= 1.0
    stepped = not torch.equal(model.cv_embed, before)
    if precision == "fp16":  # GradScaler skips a step whose scaled gradients overflow, and halves its scale
        assert stepped or engine.scaler.get_scale() < 2.0 ** 16
    else:
        assert stepped
    with pytest.raises(ValueError, match="tfclip.precision must be one of"):
        build_engine(tiny_config(data_root, str(tmp_path), "tfclip.precision", "fp8"), datamanager, model,
                     *build_optimization(cfg, model))


def test_select_on_test_resumed_run_keeps_the_uninterrupted_runs_selection(data_root, tmp_path):
    """A run stopped after epoch 1 and resumed with ``model.resume auto`` takes up epoch 1's score from
    model-best.pth.tar: it selects and finally tests what the uninterrupted run does (with the best at epoch 1,
    a resumed run that forgot it would keep epoch 2)."""
    opts = ("tfclip.select_on_test", "True", "test.eval_freq", "1", "train.lr", "3e-3")
    whole = run_single(tiny_config(data_root, str(tmp_path / "whole"), *opts))
    part_dir = str(tmp_path / "part")
    run_single(tiny_config(data_root, part_dir, *opts, "train.max_epoch", "1"))
    resumed = run_single(tiny_config(data_root, part_dir, *opts, "model.resume", "auto"))
    assert whole["best_epoch"] == 1
    assert resumed["best_epoch"] == 1
    assert resumed["results"]["synthvid"]["mAP"] == whole["results"]["synthvid"]["mAP"]
    assert resumed["results"]["synthvid"]["cmc"] == whole["results"]["synthvid"]["cmc"]
    log = open(sorted(glob.glob(os.path.join(part_dir, "train.log-*")))[-1]).read()
    assert "the best so far is epoch 1" in log


def test_restore_selection_ignores_a_best_checkpoint_from_after_the_resumed_epoch(tmp_path, capsys):
    from tfclip_plugin.engine.mixins import CheckpointMixin
    from tfclip_plugin.files.checkpoint_file import checkpoint_path, save_checkpoint

    best = checkpoint_path(str(tmp_path), "best")
    os.makedirs(os.path.dirname(best))
    save_checkpoint({"state_dict": {}, "epoch": 3, "rank1": 0.5, "mAP": 0.25}, best)
    engine = CheckpointMixin()
    engine.cfg = CN({"tfclip": CN({"select_on_test": True})})
    engine.restore_selection(str(tmp_path), 2)
    assert (engine.best_score, engine.best_epoch, engine.best_checkpoint) == (float("-inf"), None, None)
    assert "ignoring" in capsys.readouterr().out
    engine.restore_selection(str(tmp_path), 3)
    assert (engine.best_score, engine.best_epoch, engine.best_checkpoint) == (0.75, 3, best)
    engine.cfg.tfclip.select_on_test = False
    fresh = CheckpointMixin()
    fresh.cfg = engine.cfg
    fresh.restore_selection(str(tmp_path), 3)
    assert fresh.best_epoch is None


def test_evaluating_during_training_leaves_the_training_unchanged(two_epochs, data_root, tmp_path):
    """An evaluation after epoch 1 (its loaders draw seeds from the global streams) restores the random
    streams: epoch 2 trains on the same batches and reaches the same weights as the run without it."""
    _, plain_dir = two_epochs
    run_single(tiny_config(data_root, str(tmp_path), "test.eval_freq", "1"))
    evaluated = load_checkpoint(os.path.join(str(tmp_path), "model", "model.pth.tar-2"))
    plain = load_checkpoint(os.path.join(plain_dir, "model", "model.pth.tar-2"))
    assert evaluated["mAP"] > 0.0
    for name, value in plain["state_dict"].items():
        torch.testing.assert_close(evaluated["state_dict"][name], value, rtol=0, atol=0, msg=name)
