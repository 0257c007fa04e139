"""Text mode's training: stage 1 (CLIP-ReID's prompt learning) and stage 2 in the engine, on tiny towers and a
small generated synthvid; the stage-1 schedule against CLIP-ReID's numbers; resume; the CLI end to end."""
import glob
import json
import math
import os

import pytest
import torch
from engine_fixtures import tiny_config
from test_models_text import tiny_text_model

from tfclip_plugin.cli import main
from tfclip_plugin.engine import engine as engine_module
from tfclip_plugin.engine import prompt_learning
from tfclip_plugin.engine.prompt_learning import PromptLearningSchedule, learn_prompts, stage1_lr, text_image_accuracy
from tfclip_plugin.engine.runner import run_single
from tfclip_plugin.files.checkpoint_file import load_checkpoint
from tfclip_plugin.interop import build_from_checkpoint

TEXT = ("tfclip.memory", "text", "tfclip.ssp", "none", "tfclip.text_width", "64", "tfclip.text_layers", "1",
        "tfclip.stage1_batch_size", "8")


def text_config(root, save_dir, *opts):
    """The tiny engine setting in text mode (CLIP-ReID's architecture with the TMD of B5; a 1-layer text tower)."""
    return tiny_config(root, save_dir, *TEXT, *opts)


# ---------------------------------------------------------------------------------------------- schedule


def test_stage1_learning_rate_is_clipreids_cosine_schedule_with_warmup():
    schedule = PromptLearningSchedule()  # CLIP-ReID's ViT recipe: 120 epochs, 3.5e-4, warm-up 5 from 1e-5
    warmup = [stage1_lr(t, schedule) for t in range(1, 5)]
    assert warmup == pytest.approx([7.8e-5, 1.46e-4, 2.14e-4, 2.82e-4], rel=1e-9)
    assert stage1_lr(5, schedule) == pytest.approx(1e-6 + 0.5 * 3.49e-4 * (1 + 0.9914448613738104), rel=1e-9)
    assert stage1_lr(5, schedule) == pytest.approx(3.485e-4, abs=5e-8)  # the warm-up is not a prefix
    assert stage1_lr(60, schedule) == pytest.approx(1e-6 + 0.5 * 3.49e-4, rel=1e-9)
    assert stage1_lr(119, schedule) == pytest.approx(1e-6 + 0.5 * 3.49e-4 * (1 + math.cos(math.pi * 119 / 120)))
    assert stage1_lr(120, schedule) == 1e-6
    assert stage1_lr(30, PromptLearningSchedule(epochs=60)) == pytest.approx(1e-6 + 0.5 * 3.49e-4, rel=1e-9)  # RN50
    assert stage1_lr(1, PromptLearningSchedule(epochs=2)) == pytest.approx(7.8e-5)  # still warming up
    with pytest.raises(ValueError, match="tfclip.stage1_epochs and tfclip.stage1_batch_size must be positive"):
        PromptLearningSchedule(batch_size=0)


# ---------------------------------------------------------------------------------------------- stage 1


def separable_features(num_classes=5, per_class=4, dim=64, seed=0):
    """(features (N, dim), labels (N,)): one random direction per identity plus noise."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return centers[labels] + 0.3 * torch.randn(len(labels), dim, generator=generator), labels


def test_stage1_trains_only_the_identity_tokens_and_raises_both_accuracies():
    model = tiny_text_model()
    features, labels = separable_features()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = text_image_accuracy(features, labels, model.identity_text_features())
    history = learn_prompts(model, features, labels, PromptLearningSchedule(epochs=40, batch_size=8, lr=3e-3))
    after = text_image_accuracy(features, labels, model.identity_text_features())
    # measured (CPU, torch 2.14): i2t 0.25 -> 1.00, t2i 0.40 -> 1.00, loss 7.6 -> 1.0
    assert after["i2t"] >= before["i2t"] + 0.5 and after["t2i"] >= before["t2i"] + 0.5, (before, after)
    assert len(history) == 40 and history[-1] < 0.5 * history[0]
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before_state[k])}
    assert changed == {"text.prompt_learner.cls_ctx"}  # encoders, prefix/suffix, heads: bit for bit
    cls_ctx = model.text.prompt_learner.cls_ctx
    assert not cls_ctx.requires_grad and cls_ctx.grad is None
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("count, expected", [(20, [8, 8, 4]), (16, [8, 8])])
def test_stage1_batches_are_a_permutation_per_epoch_with_the_last_partial_batch_and_no_empty_one(
        monkeypatch, count, expected):
    seen = []
    original = prompt_learning.image_text_contrastive_loss

    def recording(image_features, text_features, labels):
        seen.append(image_features[:, 0].round().long().tolist())
        return original(image_features, text_features, labels)

    monkeypatch.setattr(prompt_learning, "image_text_contrastive_loss", recording)
    features, labels = separable_features(num_classes=4, per_class=count // 4)
    features[:, 0] = torch.arange(count, dtype=torch.float32)  # the row index travels with each feature
    learn_prompts(tiny_text_model(num_classes=4), features, labels, PromptLearningSchedule(epochs=2, batch_size=8))
    per_epoch = len(expected)
    assert [len(batch) for batch in seen] == expected * 2
    epochs = [sum(seen[i * per_epoch:(i + 1) * per_epoch], []) for i in range(2)]
    assert all(sorted(rows) == list(range(count)) for rows in epochs)
    assert epochs[0] != epochs[1]
    seen.clear()
    learn_prompts(tiny_text_model(num_classes=4), features, labels, PromptLearningSchedule(epochs=2, batch_size=8))
    assert sum(seen[:per_epoch], []) == epochs[0]  # seeded: every rank of a process group draws the same batches


# ---------------------------------------------------------------------------------------------- engine


@pytest.fixture(scope="module")
def text_run(data_root, tmp_path_factory):
    """One seeded text-mode run: 60 stage-1 epochs, 1 epoch of stage 2 (results, save_dir)."""
    save_dir = str(tmp_path_factory.mktemp("text"))
    return run_single(text_config(data_root, save_dir, "tfclip.stage1_epochs", "60", "train.max_epoch", "1")), save_dir


def test_text_mode_run_learns_prompts_then_trains_with_the_fixed_text_table(text_run, data_root, tmp_path):
    from tfclip_plugin.data import build_datamanager
    from tfclip_plugin.engine.build import build_model, build_optimization

    results, save_dir = text_run
    stage1 = results["stage1"]
    before, after = stage1["accuracy_before"], stage1["accuracy_after"]
    # measured on this fixture (CPU, torch 2.14): i2t 0.14 -> 0.54, t2i 0.125 -> 0.375, loss 10.7 -> 2.8
    assert after["i2t"] >= before["i2t"] + 0.2 and after["t2i"] >= before["t2i"] + 0.15, stage1
    assert len(stage1["loss"]) == 60 and stage1["loss"][-1] < 0.5 * stage1["loss"][0]
    assert results["wall_seconds"]["phase1"] > 0 and results["results"]["synthvid"]["num_valid_queries"] > 0

    cfg = text_config(data_root, str(tmp_path))
    torch.manual_seed(cfg.train.seed)
    fresh = build_model(cfg, build_datamanager(cfg))
    optimizer, _ = build_optimization(cfg, fresh)
    names = [n for group in optimizer.param_groups for n in group["param_names"]]
    assert names and not any(n.startswith("text.") for n in names)  # stage 2 leaves the text branch out

    final = load_checkpoint(os.path.join(save_dir, "model", "model.pth.tar-1"))["state_dict"]
    for name, value in fresh.state_dict().items():
        if name.startswith("text.") and name != "text.prompt_learner.cls_ctx":
            assert torch.equal(final[name], value), name  # the text encoder never trains
    assert not torch.equal(final["text.prompt_learner.cls_ctx"], fresh.text.prompt_learner.cls_ctx)
    trained = tiny_text_model(num_classes=8, temporal="tmd")
    trained.load_state_dict(final)
    assert bool(final["memory_ready"])  # the table is the text of the final prompts: they did not move in stage 2
    torch.testing.assert_close(final["memory"], trained.identity_text_features())


def test_text_mode_logs_the_image_to_text_terms(text_run):
    _, save_dir = text_run
    log = open(glob.glob(os.path.join(save_dir, "train.log-*"))[0]).read()
    assert "loss_i2t" in log and "acc_i2t" in log and "loss_v2m" not in log
    assert "Stage 1 done" in log and "Stage-1 checkpoint saved" in log


def test_a_run_resumed_after_stage1_skips_it_and_continues_exactly(data_root, tmp_path, monkeypatch):
    opts = ("tfclip.stage1_epochs", "3", "train.max_epoch", "2")
    uninterrupted = tmp_path / "full"
    run_single(text_config(data_root, str(uninterrupted), *opts))

    def interrupted(self, data):
        raise KeyboardInterrupt("preempted")

    with monkeypatch.context() as patch:  # a run stopped during the first epoch of stage 2
        patch.setattr(engine_module.TFCLIPEngine, "forward_backward", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_single(text_config(data_root, str(tmp_path / "stopped"), *opts))
    latest = str(tmp_path / "stopped" / "model" / "checkpoint-latest.pth.tar")
    checkpoint = load_checkpoint(latest)
    assert checkpoint["epoch"] == 0 and bool(checkpoint["state_dict"]["memory_ready"])

    def no_stage1(self):
        raise AssertionError("a resumed run must not repeat stage 1")

    monkeypatch.setattr(engine_module.TFCLIPEngine, "learn_prompts", no_stage1)
    resumed = run_single(text_config(data_root, str(tmp_path / "resumed"), *opts, "model.resume", latest))
    assert resumed["wall_seconds"]["phase1"] == 0.0 and "stage1" not in resumed
    continued = load_checkpoint(str(tmp_path / "resumed" / "model" / "model.pth.tar-2"))["state_dict"]
    reference = load_checkpoint(str(uninterrupted / "model" / "model.pth.tar-2"))["state_dict"]
    for name, value in reference.items():
        torch.testing.assert_close(continued[name], value, msg=name)


def test_stage1_features_are_cached_under_their_own_name(data_root, tmp_path):
    cache = str(tmp_path / "cache")
    for run in ("a", "b"):
        run_single(text_config(data_root, str(tmp_path / run), "tfclip.stage1_epochs", "1", "train.max_epoch", "1",
                               "tfclip.memory_cache", cache))
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].startswith("stage1-features-")
    log = open(glob.glob(str(tmp_path / "b" / "train.log-*"))[0]).read()
    assert "training features read from the cache" in log
    memories = [load_checkpoint(str(tmp_path / run / "model" / "model.pth.tar-1"))["state_dict"]["memory"]
                for run in ("a", "b")]
    torch.testing.assert_close(memories[0], memories[1])


def test_memory_none_trains_without_phase1_or_a_table_term(data_root, tmp_path):
    results = run_single(tiny_config(data_root, str(tmp_path), "tfclip.memory", "none", "train.max_epoch", "1"))
    assert results["wall_seconds"]["phase1"] == 0.0 and "stage1" not in results
    state = load_checkpoint(str(tmp_path / "model" / "model.pth.tar-1"))["state_dict"]
    assert not bool(state["memory_ready"]) and not any(k.startswith(("ssp.", "text.")) for k in state)
    log = open(glob.glob(str(tmp_path / "train.log-*"))[0]).read()
    assert "loss_v2m 0.0000" in log and "Phase 1" not in log


def test_cli_text_mode_run_end_to_end_writes_results(data_root, tmp_path):
    save_dir = str(tmp_path / "cli")
    status = main(["-s", "synthvid", "-t", "synthvid", "--root", data_root, "model.pretrained", "False",
                   "data.save_dir", save_dir, "data.height", "64", "data.width", "32", "data.workers", "0",
                   "train.max_epoch", "1", "train.print_freq", "1", "video.seq_len", "4",
                   "tfclip.vision_width", "64", "tfclip.vision_layers", "1", "tfclip.embed_dim", "64",
                   "tfclip.memory", "text", "tfclip.temporal", "tap", "tfclip.ssp", "none",
                   "tfclip.text_width", "64", "tfclip.text_layers", "1", "tfclip.stage1_epochs", "2"])
    assert status == 0
    with open(os.path.join(save_dir, "results.json")) as f:
        results = json.load(f)
    assert results["config"]["tfclip"]["memory"] == "text" and len(results["stage1"]["loss"]) == 2
    target = results["results"]["synthvid"]
    assert target["num_query"] > 0 and 0.0 <= target["mAP"] <= 1.0
    path = os.path.join(save_dir, "model", "model.pth.tar-1")
    state = load_checkpoint(path)["state_dict"]
    assert state["text.prompt_learner.cls_ctx"].shape == (8, 4, 64) and bool(state["memory_ready"])
    rebuilt = build_from_checkpoint(path)  # the architecture from the run config stored in the file
    assert rebuilt.memory_mode == "text" and torch.equal(rebuilt.memory, state["memory"])
