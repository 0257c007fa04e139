"""TFCLIP forward semantics on tiny towers built through ``build_tfclip`` (the same path as the full models)."""
import pytest
import torch
from torch import nn

from model_fixtures import C, CAMS, TINY_VIT, clips, no_dropout_train, rn50, vit
from tfclip_plugin import host
from tfclip_plugin.config import get_default_config, set_active_config
from tfclip_plugin.models import TFCLIPOutput, build_tfclip
from tfclip_plugin.registry import torchreid_builder
from tfclip_plugin.models.ssp import PaperSSP, ReleasedSSP
from tfclip_plugin.models.temporal import TemporalConv1d, TemporalMemoryDiffusion


def test_eval_output_is_the_pre_bn_features_concatenated():
    model = vit()
    x = clips()
    with torch.no_grad():
        out = no_dropout_train(model)(x, CAMS)
        features = model.eval()(x, CAMS)
    assert isinstance(out, TFCLIPOutput)
    assert model.feature_dim == 64 + 64 + 64 and features.shape == (2, model.feature_dim)
    torch.testing.assert_close(features, torch.cat(out.features, dim=1))
    assert [l.shape for l in out.logits] == [(2, C)] * 3 and out.frame_logits.shape == (2 * 3, C)
    assert out.v2m_logits is None  # memory not set yet


def test_heads_follow_the_reference_layout():
    model = vit()
    names = {n for n, _ in model.named_children()}
    assert names == {"backbone", "temporal", "ssp", "bottleneck", "classifier2", "bottleneck_proj", "classifier_proj",
                     "bottleneck_proj_temp2", "classifier_proj_temp", "bottleneck_proj_temp"}
    for bn in (model.bottleneck, model.bottleneck_proj, model.bottleneck_proj_temp, model.bottleneck_proj_temp2):
        assert not bn.bias.requires_grad and torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert model.classifier2.bias is None and 0.0005 < model.classifier2.weight.std() < 0.002
    assert model.cv_embed.shape == (3, 64) and 0.01 < model.cv_embed.std() < 0.03
    assert model.memory.shape == (C, 64) and not model.memory_ready


def test_frame_and_sequence_temporal_heads_share_one_classifier():
    model = no_dropout_train(vit())
    with torch.no_grad():
        out = model(clips(), CAMS)
        tokens = model.backbone(clips().flatten(0, 1), model._camera_offsets(CAMS, 2, 3)).tokens
        frame, sequence = model.temporal(tokens.unflatten(0, (2, 3)))
    torch.testing.assert_close(out.frame_logits, model.classifier_proj_temp(model.bottleneck_proj_temp(frame)))
    torch.testing.assert_close(out.logits[2], model.classifier_proj_temp(model.bottleneck_proj_temp2(sequence)))
    torch.testing.assert_close(out.features[2], sequence)


def test_sie_adds_the_clip_camera_row_to_every_frame_cls_token():
    model = vit(sie_coe=0.5).eval()
    x = clips(1, 4)
    with torch.no_grad():
        with_sie = model(x, torch.tensor([2]))
        model.backbone.visual.class_embedding += 0.5 * model.cv_embed[2]
        shifted = model(x)  # camids None: no SIE
    torch.testing.assert_close(with_sie, shifted)


def test_each_clip_uses_only_its_own_camera_and_frames():
    model = vit().eval()
    x = clips(2, 3)
    with torch.no_grad():
        both = model(x, torch.tensor([0, 2]))
        first = model(x[:1], torch.tensor([0]))
        swapped = model(x.flip(0), torch.tensor([2, 0]))
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both.flip(0), swapped, atol=1e-5, rtol=1e-5)


def test_sie_off_and_missing_camids_mean_no_camera_embedding():
    off = vit(sie=False).eval()
    assert off.cv_embed is None
    on = vit().eval()
    off.load_state_dict({k: v for k, v in on.state_dict().items() if k != "cv_embed"})
    x = clips()
    with torch.no_grad():
        torch.testing.assert_close(off(x, CAMS), on(x))


@pytest.mark.parametrize("camids, message", [
    (torch.tensor([0, 3]), "camera id 3 is outside the SIE table of 3 training cameras"),
    (torch.tensor([-1, 0]), "camera id -1 is outside the SIE table"),
    (torch.tensor([0]), r"expected camids as 2 integer camera indices \(one per clip\), got shape \(1,\)"),
    (torch.tensor([0.0, 1.0]), "integer camera indices"),
])
def test_bad_camera_ids_are_rejected(camids, message):
    with pytest.raises(ValueError, match=message):
        vit().eval()(clips(), camids)


@pytest.mark.parametrize("shape", [(2, 3, 64, 32, 1, 1), (2, 3, 3, 64, 48), (2, 3, 1, 64, 32), (3, 64, 32)])
def test_clips_of_the_wrong_rank_or_size_are_rejected(shape):
    with pytest.raises(ValueError, match=r"expected clips \(B, T, 3, 64, 32\) or frames \(N, 3, 64, 32\), got"):
        vit().eval()(torch.zeros(shape))


def test_tmd_sees_detached_tokens():
    model = no_dropout_train(vit())
    out = model(clips(), CAMS)
    (out.logits[2].sum() + out.frame_logits.sum()).backward()
    assert model.backbone.visual.conv1.weight.grad is None and model.cv_embed.grad is None
    assert model.temporal.message_fc.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model(clips(), CAMS).logits[0].sum().backward()
    assert model.backbone.visual.conv1.weight.grad.abs().sum() > 0 and model.cv_embed.grad.abs().sum() > 0


def test_tmd_appends_the_memory_token_last_and_mixes_frames_only_within_a_clip():
    tmd = TemporalMemoryDiffusion(64).eval()
    tokens = torch.randn(2, 3, 9, 64)
    with torch.no_grad():
        frame, sequence = tmd(tokens)
        message = tmd.message_fc(tokens.mean(dim=2))
        h = tmd.message_ln(message)
        message = message + tmd.message_attn(h, h, h, need_weights=False)[0]
        x = torch.cat([tokens, message[:, :, None]], dim=2).flatten(0, 1)
        assert x.shape == (6, 10, 64)
        torch.testing.assert_close(frame, tmd.diffusion(x).mean(dim=1))
        torch.testing.assert_close(sequence, frame.view(2, 3, 64).mean(dim=1))
        changed = tokens.clone()
        changed[1, 2] += 1.0
        other_frame, _ = tmd(changed)
    torch.testing.assert_close(other_frame[:3], frame[:3])  # clip 0 untouched
    assert not torch.allclose(other_frame[3:5], frame[3:5])  # the other frames of clip 1 hear about it


def test_v2m_logits_are_raw_dot_products_with_the_prompted_memory():
    model = no_dropout_train(vit(ssp="paper"))
    memory = torch.randn(C, 64)
    model.set_memory(memory)
    assert bool(model.memory_ready)
    x = clips()
    with torch.no_grad():
        out = model(x, CAMS)
        tokens = model.backbone(x.flatten(0, 1), model._camera_offsets(CAMS, 2, 3)).tokens
        f_proj = model.backbone.project(tokens[:, 0]).view(2, 3, -1).mean(dim=1)
        video = (tokens.view(2, 3, 9, 64) @ model.backbone.visual.proj).mean(dim=1)
        prompted = memory + model.ssp(memory, video)
    expected = torch.stack([prompted[b] @ f_proj[b] for b in range(2)])
    torch.testing.assert_close(out.v2m_logits, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out.features[1], f_proj)


def test_v2m_without_ssp_uses_the_bare_memory_and_memory_false_disables_it():
    model = no_dropout_train(vit(ssp="none"))
    assert model.ssp is None
    memory = torch.randn(C, 64)
    model.set_memory(memory)
    with torch.no_grad():
        out = model(clips(), CAMS)
    torch.testing.assert_close(out.v2m_logits, out.features[1] @ memory.t())
    baseline = vit(memory=False)
    assert baseline.ssp is None
    baseline.set_memory(memory)
    assert baseline.train()(clips(), CAMS).v2m_logits is None


def test_paper_ssp_returns_the_residual_update():
    ssp = PaperSSP(64, layers=2).eval()
    memory, video = torch.randn(C, 64), torch.randn(2, 9, 64)
    with torch.no_grad():
        x = memory.expand(2, -1, -1)
        v = ssp.video_norm(video)
        for layer in ssp.layers:
            x = x + layer.cross_attn(layer.cross_attn_norm(x), v)
            x = x + layer.mlp(layer.mlp_norm(x))
        torch.testing.assert_close(ssp(memory, video), x - memory, atol=1e-6, rtol=1e-5)
        for layer in ssp.layers:
            nn.init.zeros_(layer.cross_attn.proj.weight)
            nn.init.zeros_(layer.cross_attn.proj.bias)
            nn.init.zeros_(layer.mlp[3].weight)
            nn.init.zeros_(layer.mlp[3].bias)
        assert torch.equal(ssp(memory, video), torch.zeros(2, C, 64))
    assert not hasattr(ssp.layers[0], "self_attn") or ssp.layers[0].self_attn is None


def test_released_ssp_keeps_the_unused_reference_parameters_frozen():
    ssp = ReleasedSSP(64, layers=1)
    assert not ssp.norm.weight.requires_grad and not ssp.alpha.requires_grad
    assert torch.equal(ssp.alpha, torch.full((64,), 0.1))
    memory, video = torch.randn(C, 64), torch.randn(2, 9, 64)
    ssp(memory, video).sum().backward()
    assert ssp.norm.weight.grad is None and ssp.layers[0].self_attn.q_proj.weight.grad is not None


def test_memory_buffers_travel_with_the_state_dict_and_are_checked():
    model = vit()
    model.set_memory(torch.ones(C, 64))
    state = model.state_dict()
    assert torch.equal(state["memory"], torch.ones(C, 64)) and bool(state["memory_ready"])
    with pytest.raises(ValueError, match=r"expected a class table \(CLIP-Memory or text features\) of shape "
                                         r"\(5, 64\)"):
        model.set_memory(torch.ones(C, 32))


def test_encode_for_memory_is_the_frame_mean_projected_cls_without_sie():
    model = vit().eval()
    x = clips()
    with torch.no_grad():
        encoded = model.encode_for_memory(x)
        features = model(x)  # no camids: no SIE
    assert encoded.shape == (2, 64)
    torch.testing.assert_close(encoded, features[:, 64:128])
    with pytest.raises(ValueError, match=r"expected clips \(B, T, 3, H, W\)"):
        model.encode_for_memory(x[0])


def test_frame_batches_follow_torchreid_conventions():
    frames = torch.randn(4, 3, 64, 32)
    softmax = vit().train()
    logits = softmax(frames)
    assert isinstance(logits, list) and [l.shape for l in logits] == [(4, C)] * 3
    logits, features = vit(loss="triplet").train()(frames)
    assert [f.shape[1] for f in features] == [64, 64, 64]
    with torch.no_grad():
        assert softmax.eval()(frames).shape == (4, softmax.feature_dim)
        torch.testing.assert_close(softmax(frames), softmax(frames[:, None]))


def test_tap_has_no_temporal_module_or_heads():
    model = vit(temporal="tap")
    assert model.temporal is None and not hasattr(model, "classifier_proj_temp")
    assert model.feature_dim == 128
    out = no_dropout_train(model)(clips(), CAMS)
    assert len(out.logits) == 2 and len(out.features) == 2 and out.frame_logits is None


@pytest.mark.parametrize("temporal", ["conv1d", "transf", "transf_cls"])
def test_table5_alternatives_run_on_the_projected_frame_embeddings(temporal):
    model = vit(temporal=temporal)
    assert model.feature_dim == 64 + 64 + 64 and not hasattr(model, "bottleneck_proj_temp")
    out = no_dropout_train(model)(clips(), CAMS)
    assert out.frame_logits is None and out.features[2].shape == (2, 64)
    out.logits[2].sum().backward()
    assert model.backbone.visual.conv1.weight.grad.abs().sum() > 0  # trained through the backbone


def test_conv1d_shifts_channels_across_neighbouring_frames():
    conv = TemporalConv1d(8)
    frames = torch.arange(3 * 8, dtype=torch.float32).view(1, 3, 8)
    shifted = torch.zeros(1, 3, 8)
    shifted[:, 1:, :2] = frames[:, :-1, :2]  # first quarter from the previous frame
    shifted[:, :, 2:6] = frames[:, :, 2:6]  # middle half from the same frame
    shifted[:, :-1, 6:] = frames[:, 1:, 6:]  # last quarter from the next frame
    with torch.no_grad():
        torch.testing.assert_close(conv(frames), (frames + shifted).mean(dim=1))


def test_temporal_transformers_refuse_clips_longer_than_their_positions():
    model = vit(temporal="transf").eval()
    with pytest.raises(ValueError, match="at most 77 frames"):
        model.temporal(torch.zeros(1, 78, 64))


def test_cnn_trains_end_to_end_and_tests_on_v_and_v_hat():
    model = rn50()
    assert model.cv_embed is None  # SIE is a ViT CLS-token embedding
    assert model.feature_dim == 64 + 64  # [v | v-hat]
    memory = torch.randn(C, 64)
    model.set_memory(memory)
    x = clips()
    out = model.train()(x, CAMS)  # camera ids are ignored without SIE
    assert [f.shape[1] for f in out.features] == [512, 64, 64]
    loss = sum(l.logsumexp(1).sum() for l in out.logits) + out.frame_logits.logsumexp(1).sum()
    (loss + out.v2m_logits.logsumexp(1).sum()).backward()
    assert model.backbone.visual.conv1.weight.grad.abs().sum() > 0
    assert model.ssp.layers[0].cross_attn.q_proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        features = model(x)
        tokens = model.backbone(x.flatten(0, 1)).tokens
        _, v_hat = model.temporal(tokens.unflatten(0, (2, 3)))
    torch.testing.assert_close(features, torch.cat([model.encode_for_memory(x), v_hat], dim=1))


def test_builder_options_are_validated():
    with pytest.raises(TypeError, match="unknown TF-CLIP model option\\(s\\) temporall; valid options: clip_weights"):
        build_tfclip("tfclip_vit", C, 1, temporall="tmd")
    with pytest.raises(ValueError, match="unknown tfclip.temporal 'lstm'"):
        build_tfclip("tfclip_vit", C, 1, temporal="lstm")
    with pytest.raises(ValueError, match="unknown tfclip.ssp 'big'"):
        build_tfclip("tfclip_vit", C, 1, ssp="big")
    with pytest.raises(ValueError, match="unknown TF-CLIP model 'tfclip_vit32'"):
        build_tfclip("tfclip_vit32", C, 1)
    with pytest.raises(ValueError, match="SIE needs at least one camera"):
        build_tfclip("tfclip_vit", C, 0, height=64, width=32, **TINY_VIT)
    with pytest.raises(ValueError, match="unknown loss 'arcface'"):
        build_tfclip("tfclip_vit", C, 1, height=64, width=32, loss="arcface", **TINY_VIT)


def test_torchreid_builders_read_the_active_config():
    cfg = get_default_config()
    cfg.data.height, cfg.data.width = 64, 32
    cfg.tfclip.vision_width, cfg.tfclip.vision_layers, cfg.tfclip.embed_dim = 64, 1, 64
    cfg.tfclip.temporal, cfg.tfclip.ssp = "tap", "released"
    set_active_config(cfg)
    try:
        model = host.models.build_model("tfclip_vit", num_classes=C, loss="triplet", pretrained=True, use_gpu=False)
        narrower = torchreid_builder("tfclip_vit")(C, num_cameras=4, height=32, width=32)
    finally:
        set_active_config(None)
    assert model.backbone.image_size == (64, 32) and model.cv_embed.shape[0] == 1  # num_cameras 0 -> 1
    assert model.temporal is None and isinstance(model.ssp, ReleasedSSP) and model.loss == "triplet"
    assert len(model.backbone.visual.transformer.resblocks) == 1
    assert narrower.backbone.image_size == (32, 32) and narrower.cv_embed.shape[0] == 4
