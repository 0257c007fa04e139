"""A crash must not cost the run: kill -9 during training and during a checkpoint write, then resume.

Each run is the real command line (``python -m tfclip_plugin``) in a child process on a small synthvid.
The error messages for bad input are tested beside the code that raises them (test_cli, test_data_*,
test_models_*, test_engine_*); docs/troubleshooting.md lists them.
"""
from __future__ import annotations

import json
import os
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


def _command(root: str, save_dir: str, *opts: str) -> list:
    return [sys.executable, "-m", "tfclip_plugin", "-s", "synthvid", "-t", "synthvid", "--root", root,
            "data.save_dir", save_dir, *TINY, *opts]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


def _metrics(save_dir: str) -> dict:
    with open(os.path.join(save_dir, "results.json")) as f:
        result = json.load(f)["results"]["synthvid"]
    return {key: result[key] for key in ("cmc", "mAP", "mINP")}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("reid-data"))
    generate_synthvid(root, seed=0, **SYNTHVID_SIZE)
    return root


def test_kill_during_training_then_resume_reproduces_the_uninterrupted_run(data_root, tmp_path):
    continuous = str(tmp_path / "continuous")
    subprocess.run(_command(data_root, continuous), env=_env(), check=True, capture_output=True, timeout=600)

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
    final = load_checkpoint(os.path.join(interrupted, "model", "model.pth.tar-3"))
    reference = load_checkpoint(os.path.join(continuous, "model", "model.pth.tar-3"))
    for name, value in reference["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], value, rtol=0, atol=0, msg=name)


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
