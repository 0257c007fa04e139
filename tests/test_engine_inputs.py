"""Engines on uint8 batches: the torchreid baseline engines train, bf16-weight evaluation and phase 1 stay close to
fp32 with the master weights untouched, and tfclip.compile wraps the training forward only."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from engine_fixtures import tiny_config

from tfclip_plugin.data import build_datamanager
from tfclip_plugin.engine.build import build_engine, build_model, build_optimization


def engine_for(cfg):
    datamanager = build_datamanager(cfg)
    model = build_model(cfg, datamanager)
    return build_engine(cfg, datamanager, model, *build_optimization(cfg, model))


@pytest.mark.parametrize("loss", ["softmax", "triplet"])
def test_baseline_engines_train_a_step_and_test_on_uint8_batches(data_root, tmp_path, loss):
    torch.manual_seed(0)
    engine = engine_for(tiny_config(data_root, str(tmp_path), "model.name", "osnet_x0_25", "loss.name", loss))
    batch = next(iter(engine.train_loader))
    assert batch["img"].dtype == torch.uint8 and batch["img"].shape == (16, 4, 3, 64, 32)
    engine.model.train()
    before = [p.detach().clone() for p in engine.model.parameters()]
    summary = engine.forward_backward(batch)
    assert np.isfinite(summary["loss"] if loss == "softmax" else summary["loss_x"])
    assert any(not torch.equal(p, b) for p, b in zip(engine.model.parameters(), before))
    engine.model.eval()
    with torch.no_grad():
        features = engine.extract_features(engine.normaliser(batch["img"][:2]))
    assert features.shape[0] == 2 and torch.isfinite(features).all()
    query, q_pids, _ = engine.tracklet_features("synthvid", "query", None)  # dense sampling, uint8 loader
    assert query.shape[0] == len(q_pids) and torch.isfinite(query).all()


def test_bf16_weights_evaluate_and_build_the_memory_close_to_fp32(data_root, tmp_path):
    torch.manual_seed(0)
    engine = engine_for(tiny_config(data_root, str(tmp_path), "tfclip.test_precision", "bf16"))
    model = engine.model.eval()
    master = {k: v.clone() for k, v in model.state_dict().items()}
    with engine.evaluation_weights() as evaluated:
        assert engine.model is evaluated and evaluated is not model
        assert {p.dtype for p in evaluated.parameters()} == {torch.bfloat16}
        bf16, _, _ = engine.tracklet_features("synthvid", "gallery", None)
    assert engine.model is model and {p.dtype for p in model.parameters()} == {torch.float32}
    memory_bf16 = engine.build_memory()
    assert engine.memory_settings()["precision"] == "bf16 weights"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in master.items() if k not in ("memory", "memory_ready"))

    engine.cfg.defrost()
    engine.cfg.tfclip.test_precision = "fp32"
    model.eval()
    with engine.evaluation_weights() as evaluated:
        assert evaluated is model
        fp32, _, _ = engine.tracklet_features("synthvid", "gallery", None)
    model.memory_ready.fill_(False)
    memory_fp32 = engine.build_memory()
    for ours, exact in ((bf16, fp32), (memory_bf16, memory_fp32)):
        assert ours.dtype == torch.float32 and ours.shape == exact.shape
        assert F.cosine_similarity(ours, exact, dim=1).min() > 0.999
        assert (ours - exact).abs().max() < 0.05 * exact.abs().max()
        assert not torch.equal(ours, exact)  # bf16 products did run


def test_compile_wraps_the_training_forward_once_and_checkpoints_keep_their_names(data_root, tmp_path, monkeypatch):
    calls = []

    def fake_compile(module, mode):
        calls.append((module, mode))
        return lambda *args: module(*args)

    monkeypatch.setattr(torch, "compile", fake_compile)
    engine = engine_for(tiny_config(data_root, str(tmp_path), "tfclip.compile", "max-autotune"))
    engine.build_memory()
    engine.model.train()
    engine.epoch, engine.batch_idx = 0, 0
    for batch, _ in zip(engine.train_loader, range(2)):
        assert np.isfinite(engine.forward_backward(batch)["loss"])
    assert calls == [(engine.training_model, "max-autotune")]
    assert set(engine.checkpoint_state(0, 0.0)["state_dict"]) == set(engine.model.state_dict())
    with pytest.raises(ValueError, match=r"tfclip.compile must be '' \(off\) or a torch.compile mode \(default, "
                                         r"reduce-overhead, max-autotune, max-autotune-no-cudagraphs\); got 'fast'"):
        engine_for(tiny_config(data_root, str(tmp_path), "tfclip.compile", "fast"))


@pytest.mark.skipif(os.environ.get("TFCLIP_TEST_COMPILE") != "1",
                    reason="compiles with inductor: 5 s with a warm cache, minutes cold; TFCLIP_TEST_COMPILE=1 runs it")
def test_compiled_training_step_equals_the_eager_one(data_root, tmp_path):
    from tfclip_plugin import host

    losses, batch = {}, None
    for mode in ("", "default"):
        host.set_random_seed(0)
        engine = engine_for(tiny_config(data_root, str(tmp_path), "tfclip.compile", mode, "tfclip.vision_layers",
                                        "1"))
        engine.model.set_memory(torch.randn(engine.model.num_classes, 64, generator=torch.Generator().manual_seed(1)))
        engine.model.train()
        engine.epoch, engine.batch_idx = 0, 0
        for module in engine.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        batch = batch or next(iter(engine.train_loader))
        losses[mode] = engine.forward_backward(batch)["loss"]
        assert set(engine.checkpoint_state(0, 0.0)["state_dict"]) == set(engine.model.state_dict())
    assert losses["default"] == pytest.approx(losses[""], rel=1e-5)
