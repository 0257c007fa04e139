"""The command line under torchrun, as users launch it: 2 gloo processes train and test a tiny TF-CLIP on a
small synthvid; the metrics are close to a single-process run of the same config (same global batch)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from engine_fixtures import SYNTHVID_SIZE, tiny_config
from tfclip_plugin.data import generate_synthvid
from tfclip_plugin.engine.runner import run_single

EPOCHS = ("train.max_epoch", "10", "train.stepsize", "[100]", "train.print_freq", "100")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(2-process results, its save_dir, its stdout, single-process results, untrained results)."""
    root = tmp_path_factory.mktemp("e2e")
    generate_synthvid(str(root / "data"), seed=3, **SYNTHVID_SIZE)
    config = root / "tiny.yaml"
    config.write_text(tiny_config(str(root / "data"), str(root / "ddp"), *EPOCHS).dump())
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tfclip_plugin", "--config-file", str(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    with open(root / "ddp" / "results.json") as f:
        ddp = json.load(f)
    single = run_single(tiny_config(str(root / "data"), str(root / "single"), *EPOCHS))
    untrained = run_single(tiny_config(str(root / "data"), str(root / "untrained"), "test.evaluate", "True"))
    return ddp, str(root / "ddp"), done.stdout, single, untrained


def test_two_processes_complete_and_rank_0_alone_prints_and_writes(runs):
    ddp, save_dir, stdout, _, _ = runs
    assert stdout.count("Show configuration") == 1
    assert "DistributedDataParallel over 2 processes (gloo): 8 of each batch of 16 tracklets per process" in stdout
    files = sorted(os.listdir(save_dir))
    assert len([f for f in files if f.startswith("train.log-")]) == 1, files
    assert len([f for f in files if f.startswith("events.out.tfevents")]) == 1, files
    assert "results.json" in files and os.listdir(os.path.join(save_dir, "test_outputs")) == ["synthvid.npz"]
    assert sorted(os.listdir(os.path.join(save_dir, "model"))) == ["checkpoint-latest.pth.tar", "model.pth.tar-10"]
    assert ddp["results"]["synthvid"]["epoch"] == 10 and ddp["config"]["train"]["batch_size"] == 16


def test_metrics_close_to_the_single_process_run(runs):
    # measured (CPU, torch 2.14): untrained mAP 0.165, one process 0.377, two processes 0.250 (every rank reseeded
    # per epoch); one-process runs with seeds 1..6 span 0.22..0.36 (the sampler plans and augmentation draws differ
    # between the two)
    ddp, _, _, single, untrained = runs
    ddp_map, single_map = ddp["results"]["synthvid"]["mAP"], single["results"]["synthvid"]["mAP"]
    assert abs(ddp_map - single_map) <= 0.15, (ddp_map, single_map)
    assert ddp_map >= untrained["results"]["synthvid"]["mAP"] + 0.05, (ddp_map, untrained["results"])
    assert ddp["results"]["synthvid"]["num_query"] == single["results"]["synthvid"]["num_query"]
