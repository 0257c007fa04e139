"""A crash must not cost the run: kill -9 during training and during a checkpoint write, then resume; SIGTERM
stops at the next iteration and the printed command resumes; a checkpoint that cannot be written stops the run
with the previous checkpoint intact.

Each run is the real command line (``python -m tfclip_plugin``, or ``tests/fault_injection.py``, which is the same
with a fault injected at a fixed iteration) in a child process on a small synthvid. The error messages for bad
input are tested beside the code that raises them (test_cli, test_data_*, test_models_*, test_engine_*);
docs/troubleshooting.md lists them.
"""
from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tfclip_plugin.files.checkpoint_file import load_checkpoint, save_checkpoint
from tfclip_plugin.data import generate_synthvid

from engine_fixtures import SYNTHVID_SIZE

TINY = [
    "model.pretrained", "False", "data.height", "64", "data.width", "32", "data.workers", "0",
    "train.lr", "3e-4", "train.max_epoch", "3", "train.stepsize", "[10]", "train.print_freq", "50",
    "tfclip.vision_width", "64", "tfclip.vision_layers", "2", "tfclip.embed_dim", "64",
    "tfclip.warmup_epochs", "1", "video.seq_len", "4",
]


FAULT_INJECTION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_injection.py")


def _command(root: str, save_dir: str, *opts: str) -> list:
    return [sys.executable, "-m", "tfclip_plugin", "-s", "synthvid", "-t", "synthvid", "--root", root,
            "data.save_dir", save_dir, *TINY, *opts]


def _env(**extra: str) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)


def _printed_command(line: str) -> list:
    """The argv of a printed ``cd <cwd> && tfclip-reid ...`` line, run as ``python -m tfclip_plugin``."""
    words = shlex.split(line)
    assert words[:4] == ["cd", os.getcwd(), "&&", "tfclip-reid"], line
    return [sys.executable, "-m", "tfclip_plugin", *words[4:]]


def _assert_same_weights(save_dir: str, reference_dir: str, epoch: int = 3) -> None:
    final = load_checkpoint(os.path.join(save_dir, "model", f"model.pth.tar-{epoch}"))["state_dict"]
    for name, value in load_checkpoint(os.path.join(reference_dir, "model", f"model.pth.tar-{epoch}"))[
            "state_dict"].items():
        torch.testing.assert_close(final[name], value, rtol=0, atol=0, msg=name)


def _no_temporary_files(save_dir: str) -> list:
    return [os.path.join(folder, name) for folder, _, names in os.walk(save_dir) for name in names
            if name.endswith(".tmp") or name.startswith(".")]


def _metrics(save_dir: str) -> dict:
    with open(os.path.join(save_dir, "results.json")) as f:
        result = json.load(f)["results"]["synthvid"]
    return {key: result[key] for key in ("cmc", "mAP", "mINP")}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("reid-data"))
    generate_synthvid(root, seed=0, **SYNTHVID_SIZE)
    return root


@pytest.fixture(scope="module")
def continuous(data_root, tmp_path_factory):
    """The uninterrupted 3-epoch run: its save_dir."""
    save_dir = str(tmp_path_factory.mktemp("continuous"))
    subprocess.run(_command(data_root, save_dir), env=_env(), check=True, capture_output=True, timeout=600)
    return save_dir


@pytest.fixture(scope="module")
def stopped(data_root, tmp_path_factory):
    """A run that sent itself SIGTERM at the start of epoch 2, iteration 1: (its process, save_dir, a copy of
    save_dir taken right after the stop)."""
    save_dir = str(tmp_path_factory.mktemp("stopped"))
    done = subprocess.run([sys.executable, FAULT_INJECTION, *_command(data_root, save_dir)[3:]], capture_output=True,
                          text=True, timeout=600, env=_env(FAULT="term_self", FAULT_EPOCH="2", FAULT_ITERATION="1"))
    snapshot = str(tmp_path_factory.mktemp("snapshot") / "run")
    shutil.copytree(save_dir, snapshot)
    return done, save_dir, snapshot


def test_kill_during_training_then_resume_reproduces_the_uninterrupted_run(data_root, continuous, tmp_path):
    interrupted = str(tmp_path / "interrupted")
    latest = os.path.join(interrupted, "model", "checkpoint-latest.pth.tar")
    child = subprocess.Popen(_command(data_root, interrupted), env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not os.path.exists(latest) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved_epoch = load_checkpoint(latest)["epoch"]
    assert 1 <= saved_epoch < 3

    subprocess.run(_command(data_root, interrupted, "model.resume", latest), env=_env(), check=True,
                   capture_output=True, timeout=600)
    assert _metrics(interrupted) == _metrics(continuous)
    _assert_same_weights(interrupted, continuous)


def test_sigterm_stops_at_the_next_iteration_and_the_printed_command_resumes_exactly(stopped, continuous):
    done, save_dir, _ = stopped
    assert done.returncode == 128 + signal.SIGTERM, done.stdout[-2000:] + done.stderr[-3000:]
    latest = os.path.join(save_dir, "model", "checkpoint-latest.pth.tar")
    lines = done.stdout.splitlines()
    assert lines[-2] == f"=> SIGTERM: training stopped in epoch 2 after iteration 1 of 2; {latest} holds epoch 1"
    assert lines[-1].startswith("=> To resume: ")
    assert load_checkpoint(latest)["epoch"] == 1 and os.listdir(os.path.join(save_dir, "model")) == [
        "checkpoint-latest.pth.tar"]
    assert not _no_temporary_files(save_dir) and "results.json" not in os.listdir(save_dir)
    with open(os.path.join(save_dir, "interrupted.json")) as f:
        record = json.load(f)
    assert (record["signal"], record["exit_code"], record["epoch"], record["iteration"], record["checkpoint_epoch"]) \
        == ("SIGTERM", 143, 2, 1, 1)
    assert record["resume_command"] == lines[-1][len("=> To resume: "):]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(save_dir)
    events.Reload()
    assert [e.step for e in events.Scalars("Train/loss")] == [0, 1, 2]  # the curves up to the stop were flushed

    resumed = subprocess.run(_printed_command(record["resume_command"]), env=_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"model.resume auto: resuming from {latest}" in resumed.stdout
    assert _metrics(save_dir) == _metrics(continuous)
    _assert_same_weights(save_dir, continuous)
    assert "interrupted.json" not in os.listdir(save_dir)


def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_previous_one(stopped):
    """RLIMIT_FSIZE (the checkpoint is about 4 MiB, the log and config far below 1 MiB) stands in for a full disk:
    the resumed run trains epoch 2 and fails to write its checkpoint."""
    _, _, snapshot = stopped
    latest = os.path.join(snapshot, "model", "checkpoint-latest.pth.tar")

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    done = subprocess.run(
        [sys.executable, "-m", "tfclip_plugin", "--config-file", os.path.join(snapshot, "config.yaml"),
         "data.save_dir", snapshot, "model.resume", "auto"],
        env=_env(PYTHONDONTWRITEBYTECODE="1"), capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size)
    assert done.returncode == 1, done.stderr[-3000:]
    message = done.stderr[done.stderr.index("tfclip-reid: error: "):].splitlines()
    assert message[0].startswith(f"tfclip-reid: error: cannot write {latest}: file size limit exceeded; 1.0 MiB "
                                 "written before the failure; about ")
    assert "; the file size limit (ulimit -f) is 1.0 MiB; " in message[0] and " free in " in message[0]
    assert message[1] == f"Every file written before is intact ({latest} holds epoch 1). Once there is room, " \
                         "resume with:"
    assert message[2] == f"  cd {shlex.quote(os.getcwd())} && tfclip-reid --config-file " \
                         f"{os.path.join(snapshot, 'config.yaml')} model.resume auto"
    assert done.stdout.endswith(f"Resumed from {latest}: continuing at epoch 2\n=> Start training\n")
    assert load_checkpoint(latest)["epoch"] == 1 and not _no_temporary_files(snapshot)


STALLED_SAVE = textwrap.dedent(
    """
    import os, sys, time, torch
    from tfclip_plugin.files import checkpoint_file as checkpoint
    os.fsync = lambda fd: (print("writing", flush=True), time.sleep(600))
    checkpoint.save_checkpoint({"state_dict": {"w": torch.full((1 << 20,), 2.0)}, "epoch": 2}, sys.argv[1])
    """
)


def test_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "checkpoint-latest.pth.tar")
    save_checkpoint({"state_dict": {"w": torch.ones(4)}, "epoch": 1}, path)
    child = subprocess.Popen([sys.executable, "-c", STALLED_SAVE, path], env=_env(), stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "writing"  # the new file is written, not yet in place
    child.send_signal(signal.SIGKILL)
    child.wait()
    survivor = load_checkpoint(path)
    assert survivor["epoch"] == 1
    torch.testing.assert_close(survivor["state_dict"]["w"], torch.ones(4))
