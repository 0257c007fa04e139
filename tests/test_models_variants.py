"""The ablation variants of supplement Table 3 and the pre-release SSP residual: TMC without MD
(``tfclip.temporal tmc``) and V2M against 2M + delta (``tfclip.ssp_residual pre-release``)."""
import warnings

import pytest
import torch

from model_fixtures import C, CAMS, clips, no_dropout_train, vit
from test_models_checkpoints import tiny, to_official
from tfclip_plugin.engine.build import load_weights
from tfclip_plugin.models import build_tfclip, load_official_checkpoint, model_complexity
from tfclip_plugin.models.temporal import TemporalMemoryConstruction, TemporalMemoryDiffusion


def test_tmc_is_the_mean_of_the_frame_tokens_and_its_memory_token():
    tmc = TemporalMemoryConstruction(64).eval()
    tokens = torch.randn(2, 3, 9, 64)
    with torch.no_grad():
        frame, sequence = tmc(tokens)
        message = tmc.message_fc(tokens.mean(dim=2))
        h = tmc.message_ln(message)
        message = message + tmc.message_attn(h, h, h, need_weights=False)[0]  # (2, 3, 64)
    assert frame.shape == (6, 64) and sequence.shape == (2, 64)
    expected = (9 * tokens.mean(dim=2) + message) / 10  # L tokens and the memory token, no diffusion block
    torch.testing.assert_close(frame, expected.flatten(0, 1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sequence, expected.mean(dim=1), atol=1e-6, rtol=1e-5)


def test_tmc_mixes_frames_within_a_clip_only_through_the_memory_token():
    tmc = TemporalMemoryConstruction(64).eval()
    tokens = torch.randn(2, 3, 9, 64)
    changed = tokens.clone()
    changed[1, 2] += 1.0
    with torch.no_grad():
        frame, _ = tmc(tokens)
        other, _ = tmc(changed)
        message, other_message = tmc.memory_tokens(tokens), tmc.memory_tokens(changed)
    torch.testing.assert_close(other[:3], frame[:3])  # clip 0 untouched
    assert not torch.allclose(other[3:5], frame[3:5])  # frames 0, 1 of clip 1 hear about frame 2 ...
    # ... and only through their memory tokens (their own tokens are unchanged)
    torch.testing.assert_close((other[3:5] - frame[3:5]) * 10, (other_message - message)[1, :2], atol=1e-5, rtol=1e-5)


def test_tmc_shares_tmd_parameter_names_without_the_diffusion_block():
    tmc, tmd = TemporalMemoryConstruction(64), TemporalMemoryDiffusion(64)
    assert set(tmc.state_dict()) == {k for k in tmd.state_dict() if not k.startswith("diffusion.")}
    assert not isinstance(tmc, TemporalMemoryDiffusion)


def test_tmc_model_has_tmd_heads_and_trains_on_detached_tokens():
    model = no_dropout_train(vit(temporal="tmc"))
    assert isinstance(model.temporal, TemporalMemoryConstruction) and model.temporal.frame_level
    out = model(clips(), CAMS)
    assert [l.shape for l in out.logits] == [(2, C)] * 3 and out.frame_logits.shape == (6, C)
    (out.logits[2].sum() + out.frame_logits.sum()).backward()
    assert model.backbone.visual.conv1.weight.grad is None
    assert model.temporal.message_attn.in_proj_weight.grad.abs().sum() > 0
    assert model.eval()(clips(), CAMS).shape == (2, 64 + 64 + 64)


def test_full_size_tmc_parameter_count_and_table3_rows():
    torch.manual_seed(0)
    tmc = model_complexity(build_tfclip("tfclip_vit", 625, 6, ssp="none", temporal="tmc"))
    tmd = model_complexity(build_tfclip("tfclip_vit", 625, 6, ssp="none", temporal="tmd"))
    assert tmc["temporal"] == 2_954_496  # message_fc 768x768 + bias, LayerNorm, attention 4x768x768 + biases
    assert tmd["temporal"] - tmc["temporal"] == 7_087_872  # MD = one CLIP block: the paper's A3 - A2
    assert tmc["heads"] == tmd["heads"]
    assert tmc["total"] == 90_385_152  # A2; the paper's 89.93 is 0.46M lower, as its A3 (97.02 vs our 97.47)
    assert tmc["gmacs_per_frame"] == 11.26 and tmc["temporal_gmacs_per_frame"] == 0.0
    a5 = model_complexity(build_tfclip("tfclip_vit", 625, 6, ssp="paper", temporal="tmc"))
    assert a5["total"] + 768 * 625 == 97_167_872  # + the reference's unused classifier_proj_temp2: 97.17 (A5)


def test_pre_release_residual_adds_exactly_f_proj_dot_memory_to_the_v2m_logits():
    memory = torch.randn(C, 64)
    update = no_dropout_train(vit(ssp="paper"))
    prerelease = no_dropout_train(vit(ssp="paper", ssp_residual="pre-release"))
    assert prerelease.ssp_residual == "pre-release"
    prerelease.load_state_dict(update.state_dict())
    for model in (update, prerelease):
        model.set_memory(memory)
    x = clips()
    with torch.no_grad():
        a, b = update(x, CAMS), prerelease(x, CAMS)
    torch.testing.assert_close(b.features[1], a.features[1])
    torch.testing.assert_close(b.v2m_logits - a.v2m_logits, a.features[1] @ memory.t(), atol=1e-5, rtol=1e-5)
    assert (a.features[1] @ memory.t()).abs().max() > 0.1  # the difference is not negligible


def test_pre_release_residual_belongs_to_the_paper_ssp():
    with pytest.raises(ValueError, match="'pre-release' is the paper SSP's \\(tfclip.ssp paper\\); the released SSP"):
        vit(ssp="released", ssp_residual="pre-release")
    with pytest.raises(ValueError, match="unknown tfclip.ssp_residual 'double'; expected one of update, pre-release"):
        vit(ssp_residual="double")
    memory = torch.randn(C, 64)
    bare = no_dropout_train(vit(ssp="none", ssp_residual="pre-release"))  # no SSP: the option has no effect
    bare.set_memory(memory)
    with torch.no_grad():
        out = bare(clips(), CAMS)
    torch.testing.assert_close(out.v2m_logits, out.features[1] @ memory.t())


def test_tmc_loads_the_memory_construction_of_an_official_tmd_checkpoint():
    source = tiny(seed=1, ssp="paper")
    target = tiny(seed=2, ssp="paper", temporal="tmc")
    report = load_official_checkpoint(target, to_official(source, "pre-release"))
    skipped = {k for k, reason in report["skipped"].items() if reason == "TMD weights; the model's tfclip.temporal is "
                                                                         "not 'tmd'"}
    assert skipped and all(".message_" not in k for k in skipped)
    for name in ("message_fc.weight", "message_ln.bias", "message_attn.in_proj_weight"):
        assert torch.equal(target.temporal.state_dict()[name], source.temporal.state_dict()[name])


def test_fine_tuning_a_pre_release_checkpoint_warns_unless_the_residual_matches(tmp_path):
    path = str(tmp_path / "lsvid_best.pth.tar")
    torch.save(to_official(tiny(seed=1, ssp="paper"), "pre-release"), path)
    with pytest.warns(UserWarning, match="pre-release checkpoint .*set tfclip.ssp_residual pre-release"):
        load_weights(tiny(seed=2, ssp="paper"), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_weights(tiny(seed=2, ssp="paper", ssp_residual="pre-release"), path)
