"""Two processes under torchrun (gloo, CPU) against one process, on a small generated synthvid.

The module launches itself once as a torchrun script (``python -m torch.distributed.run --standalone
--nproc_per_node 2 tests/test_distributed_ddp.py DATA OUT``); each rank saves what it computed to
``OUT/rank<r>.pt`` and the tests compare the ranks with each other and with the same computation done here in
one process: the CLIP-Memory, the test features (dense and RRS), one DDP step on the halves of a global batch
against one step on the whole batch, parameters after several steps, a run resumed under DDP, and a text-mode
run (stage 1 on every rank, then stage 2 with the frozen text branch under DDP).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from engine_fixtures import tiny_config
from tfclip_plugin import distributed, host
from tfclip_plugin.data import build_datamanager
from tfclip_plugin.engine.build import build_model, build_optimization
from tfclip_plugin.engine.engine import TFCLIPEngine
from tfclip_plugin.engine.losses import TFCLIPLoss
from tfclip_plugin.engine.mixins import DistributedMixin
from tfclip_plugin.engine.runner import run_single

WORLD = 2
TARGET = "synthvid"
TEXT_RUN = ("tfclip.memory", "text", "tfclip.ssp", "none", "tfclip.text_width", "64", "tfclip.text_layers", "1",
            "tfclip.stage1_epochs", "3", "tfclip.stage1_batch_size", "8", "train.max_epoch", "1")
TEXT_STATE = ("text.prompt_learner.cls_ctx", "memory")


def text_run_state(root: str, save_dir: str) -> dict:
    """The learned identity tokens and text table after a 1-epoch text-mode run."""
    run_single(tiny_config(root, save_dir, *TEXT_RUN))
    distributed.barrier()  # rank 0 writes the checkpoint
    state = torch.load(os.path.join(save_dir, "model", "model.pth.tar-1"), weights_only=True)["state_dict"]
    return {key: state[key] for key in TEXT_STATE}


def build_engine(root: str, save_dir: str) -> TFCLIPEngine:
    """The tiny seeded TF-CLIP engine (the same weights in every process)."""
    cfg = tiny_config(root, save_dir)
    host.set_random_seed(cfg.train.seed)
    with distributed.main_process_first():
        datamanager = build_datamanager(cfg)
        model = build_model(cfg, datamanager)
    optimizer, scheduler = build_optimization(cfg, model)
    return TFCLIPEngine(datamanager, model, optimizer, scheduler, cfg)


def tracklet_test_features(engine: TFCLIPEngine) -> dict:
    """Query and gallery (features, pids, camids) with dense and RRS sampling."""
    loaders = engine.datamanager.test_loader[TARGET]
    engine.set_model_mode("eval")
    out = {}
    for sampling in ("dense", "rrs"):
        engine.sampling_override = None if sampling == "dense" else sampling
        for split in ("query", "gallery"):
            out[f"{sampling}_{split}"] = engine.tracklet_features(TARGET, split, loaders[split])
    engine.sampling_override = None
    return out


def global_batch(engine: TFCLIPEngine) -> dict:
    """16 clips of 4 identities x 4 (one P x K batch), random pixels, the same in every process."""
    generator = torch.Generator().manual_seed(0)
    pids = torch.arange(4).repeat_interleave(4)
    return {"img": torch.randn(16, 4, 3, 64, 32, generator=generator), "pid": pids,
            "camid": torch.randint(0, engine.model.num_cameras, (16,), generator=generator)}


def deterministic_layers(model: torch.nn.Module) -> None:
    """Training mode with the BNNecks (batch statistics differ per rank without SyncBatchNorm, which needs
    GPUs) and the SSP's dropout in eval mode."""
    model.train()
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.Dropout)):
            module.eval()


def refused(call) -> str:
    try:
        call()
    except ValueError as exc:
        return str(exc)
    return ""


def worker(root: str, out: str) -> None:
    """One rank of the torchrun job."""
    assert distributed.init_from_environment(use_gpu=False)
    rank = distributed.rank()
    engine = build_engine(root, os.path.join(out, "engine"))
    cfg, model = engine.cfg, engine.model
    saved = {"memory": engine.build_memory(), "features": tracklet_test_features(engine)}

    with_sync_bn = copy.copy(engine)
    with_sync_bn.cfg = tiny_config(root, out, "tfclip.sync_bn", "True")
    baseline = DistributedMixin()
    baseline.cfg = tiny_config(root, out, "model.name", "osnet_x0_25")
    saved["refusals"] = [refused(with_sync_bn.prepare_distributed), refused(baseline.prepare_distributed)]

    # one step on this rank's half of a global batch against one step of a single process on all of it
    reference = copy.deepcopy(model)
    engine.prepare_distributed()
    batch = global_batch(engine)
    half = slice(rank * 8, rank * 8 + 8)
    deterministic_layers(model)
    deterministic_layers(reference)
    terms = engine.forward_backward({key: value[half] for key, value in batch.items()})
    t = cfg.tfclip
    criterion = TFCLIPLoss(model.num_classes, label_smooth=0.1, margin=cfg.loss.triplet.margin,
                           v2m_weight=t.v2m_loss_weight, id_weight=t.id_loss_weight,
                           triplet_weight=t.triplet_loss_weight)
    reference_terms = criterion(reference(batch["img"], batch["camid"]), batch["pid"])
    reference_terms["loss"].backward()
    saved["step"] = {
        "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        "reference_grads": {n: p.grad.clone() for n, p in reference.named_parameters() if p.grad is not None},
        "loss_tri": terms["loss_tri"], "reference_loss_tri": reference_terms["loss_tri"].item(),
    }

    # two epochs of the distributed loader (local batches of 8)
    model.train()
    steps = 0
    for engine.epoch in range(2):
        with distributed.training_epoch(engine.train_loader, model, engine.epoch):
            for data in engine.train_loader:
                engine.forward_backward(data)
                steps += 1
    saved["steps"] = steps
    saved["state"] = {k: v.clone() for k, v in model.state_dict().items()}

    # a 1-epoch run, then a run resumed from its checkpoint up to epoch 2, both under DDP
    first = os.path.join(out, "first")
    run_single(tiny_config(root, first, "train.max_epoch", "1"))
    resumed = run_single(tiny_config(root, os.path.join(out, "resumed"),
                                     "model.resume", os.path.join(first, "model", "model.pth.tar-1")))
    saved["resumed"] = resumed["results"][TARGET]
    saved["resumed_phase1"] = resumed["wall_seconds"]["phase1"]
    saved["text"] = text_run_state(root, os.path.join(out, "text"))
    torch.save(saved, os.path.join(out, f"rank{rank}.pt"))
    distributed.barrier()


@pytest.fixture(scope="module")
def ranks(data_root, tmp_path_factory):
    """What each of the 2 ranks saved."""
    out = str(tmp_path_factory.mktemp("ddp"))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
               __file__, data_root, out]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False) for r in range(WORLD)], out


@pytest.fixture(scope="module")
def single(data_root, tmp_path_factory):
    """The same memory and test features computed by one process, and its engine."""
    engine = build_engine(data_root, str(tmp_path_factory.mktemp("single")))
    return {"memory": engine.build_memory(), "features": tracklet_test_features(engine), "engine": engine}


def test_memory_is_the_same_on_every_rank_and_equals_the_single_process_memory(ranks, single):
    (r0, r1), _ = ranks
    assert r0["memory"].shape == single["memory"].shape == (8, 64)
    assert torch.equal(r0["memory"], r1["memory"])
    torch.testing.assert_close(r0["memory"], single["memory"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", ["dense_query", "dense_gallery", "rrs_query", "rrs_gallery"])
def test_test_features_are_gathered_in_dataset_order(ranks, single, key):
    (r0, r1), _ = ranks
    features, pids, camids = r0["features"][key]
    reference = single["features"][key]
    assert torch.equal(features, r1["features"][key][0])
    torch.testing.assert_close(features, reference[0], rtol=1e-5, atol=1e-5)
    assert pids.tolist() == reference[1].tolist() and camids.tolist() == reference[2].tolist()


def test_ddp_step_on_two_halves_equals_one_step_on_the_whole_batch(ranks, single):
    (r0, r1), _ = ranks
    trained = [n for n, p in single["engine"].model.named_parameters() if p.requires_grad]
    for rank in (r0, r1):
        step = rank["step"]
        assert step["loss_tri"] == pytest.approx(step["reference_loss_tri"], rel=1e-5)  # mining over 16 clips
        assert sorted(step["grads"]) == sorted(step["reference_grads"]) == sorted(trained)
        for name, grad in step["grads"].items():
            torch.testing.assert_close(grad, step["reference_grads"][name], rtol=1e-4, atol=1e-6, msg=name)
    for name, grad in r0["step"]["grads"].items():
        assert torch.equal(grad, r1["step"]["grads"][name]), name


def test_parameters_and_buffers_identical_across_ranks_after_several_steps(ranks, single):
    (r0, r1), _ = ranks
    tracklets = single["engine"].datamanager.train_loader.dataset.train
    plan = distributed.DistributedIdentitySampler(tracklets, 16, 4, num_replicas=1, rank_id=0,
                                                  seed=single["engine"].cfg.train.seed)
    global_batches = 0
    for epoch in (0, 1):
        plan.set_epoch(epoch)
        global_batches += len(plan) // 16
    assert r0["steps"] == r1["steps"] == global_batches >= 3  # the single-process number of steps
    assert r0["state"].keys() == r1["state"].keys()
    for name, value in r0["state"].items():
        assert torch.equal(value, r1["state"][name]), name
    assert int(r0["state"]["bottleneck.num_batches_tracked"]) == global_batches  # the BNNecks trained


def test_configuration_refusals_name_the_setting(ranks):
    (r0, _), _ = ranks
    assert r0["refusals"][0] == ("tfclip.sync_bn needs GPUs (use_gpu True): torch's SyncBatchNorm syncs CUDA "
                                 "tensors only")
    assert r0["refusals"][1].startswith("training under torchrun supports TF-CLIP models (tfclip_*); got "
                                        "model.name 'osnet_x0_25'")


def test_resumed_run_continues_under_ddp_and_rank_0_alone_writes(ranks):
    (r0, r1), out = ranks
    assert r0["resumed"]["epoch"] == 2 and r0["resumed"] == r1["resumed"]
    assert r0["resumed_phase1"] == 0.0  # the memory came with the checkpoint
    for run, checkpoints in (("first", ["checkpoint-latest.pth.tar", "model.pth.tar-1"]),
                             ("resumed", ["checkpoint-latest.pth.tar", "model.pth.tar-2"])):
        files = sorted(os.listdir(os.path.join(out, run)))
        assert len([f for f in files if f.startswith("train.log")]) == 1, files
        assert len([f for f in files if f.startswith("events.out.tfevents")]) == 1, files
        assert sorted(os.listdir(os.path.join(out, run, "model"))) == checkpoints
        with open(os.path.join(out, run, "results.json")) as f:
            assert json.load(f)["results"][TARGET]["epoch"] == (1 if run == "first" else 2)


def test_text_mode_stage1_gives_every_rank_the_same_prompts_and_table(ranks, data_root, tmp_path):
    (r0, r1), _ = ranks
    single = text_run_state(data_root, str(tmp_path / "text"))
    for key in TEXT_STATE:
        assert torch.equal(r0["text"][key], r1["text"][key]), key
    torch.testing.assert_close(r0["text"]["text.prompt_learner.cls_ctx"], single["text.prompt_learner.cls_ctx"],
                               rtol=1e-4, atol=1e-5)  # stage 1: the same seeded batches as one process


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
