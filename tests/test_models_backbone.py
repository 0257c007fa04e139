"""CLIP visual towers built through open_clip: structure, token forward, strides, checkpointing (tiny towers)."""
import pytest
import torch
from open_clip.model import ModifiedResNet
from open_clip.transformer import QuickGELU, VisionTransformer

from model_fixtures import TINY_RN, TINY_VIT
from tfclip_plugin.models import build_tfclip
from tfclip_plugin.models.backbone import ResNetBackbone, ViTBackbone, build_backbone, grid_shape


def _frames(n=3, height=64, width=32, seed=0):
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_vit_is_open_clips_visual_tower_only_with_quickgelu():
    model = build_tfclip("tfclip_vit", 5, 2, height=64, width=32, **TINY_VIT)
    visual = model.backbone.visual
    assert isinstance(visual, VisionTransformer)
    assert isinstance(visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert visual.transformer.resblocks[0].attn.num_heads == 1  # width 64 / head width 64
    assert len(visual.transformer.resblocks) == 2 and visual.proj.shape == (64, 64)
    assert visual.positional_embedding.shape == (4 * 2 + 1, 64)
    names = [n for n, _ in model.named_parameters()]
    assert not any("token_embedding" in n or "text_projection" in n or "logit_scale" in n for n in names)


def test_vit_token_forward_pins_open_clip_forward():
    """Without SIE, our projected CLS token equals open_clip's own pooled-and-projected output."""
    backbone = build_backbone("vit", 64, 32, **TINY_VIT).eval()
    frames = _frames()
    with torch.no_grad():
        out = backbone(frames)
        assert out.tokens.shape == (3, 9, 64) and out.cls.shape == (3, 64)
        torch.testing.assert_close(backbone.project(out.tokens[:, 0]), backbone.visual(frames))
        torch.testing.assert_close(out.cls, out.tokens[:, 0])


def test_cls_offset_equals_a_shifted_class_embedding():
    backbone = build_backbone("vit", 64, 32, **TINY_VIT).eval()
    frames = _frames(2)
    offset = torch.randn(64)
    with torch.no_grad():
        shifted = backbone(frames, offset.expand(2, -1)).tokens
        backbone.visual.class_embedding += offset
        torch.testing.assert_close(backbone(frames).tokens, shifted)


def test_stride_12_gives_overlapping_patches_and_a_larger_grid():
    assert grid_shape(256, 128, 12) == (21, 10) and grid_shape(256, 128, 16) == (16, 8)
    backbone = build_backbone("vit", 64, 32, stride=12, **TINY_VIT)
    assert backbone.visual.conv1.stride == (12, 12) and backbone.visual.conv1.kernel_size == (16, 16)
    assert backbone.grid_size == (5, 2) and backbone.visual.positional_embedding.shape == (11, 64)
    assert backbone(_frames(1)).tokens.shape == (1, 11, 64)


def test_bad_tower_settings_are_rejected():
    with pytest.raises(ValueError, match="multiple of 64"):
        build_backbone("vit", 64, 32, vision_width=48)
    with pytest.raises(ValueError, match="tfclip.stride must be in 1..16"):
        build_backbone("vit", 64, 32, stride=20, **TINY_VIT)
    with pytest.raises(ValueError, match="CNN needs 16"):
        build_backbone("rn50", 64, 32, stride=12, **TINY_RN)
    with pytest.raises(ValueError, match="divisible by 16"):
        build_backbone("rn50", 72, 32, **TINY_RN)
    with pytest.raises(ValueError, match="unknown backbone architecture 'vgg'"):
        build_backbone("vgg", 64, 32)


def test_resnet_has_last_stride_1_and_attention_pool_over_all_tokens():
    backbone = build_backbone("rn50", 64, 32, **TINY_RN).eval()
    visual = backbone.visual
    assert isinstance(visual, ModifiedResNet)
    assert [len(layer) for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4)] == [1, 1, 1, 1]
    assert visual.attnpool.positional_embedding.shape == (4 * 2 + 1, 16 * 32)
    frames = _frames(2)
    with torch.no_grad():
        stage4 = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(frames)))))
        assert stage4.shape == (2, 512, 4, 2)  # 64x32 / 16: the last stage keeps the resolution
        out = backbone(frames)
        assert out.cls.shape == (2, 512) and out.tokens.shape == (2, 9, 64)
        torch.testing.assert_close(out.cls, stage4.mean(dim=(2, 3)))
        # the first token is exactly open_clip's pooled output
        torch.testing.assert_close(out.tokens[:, 0], visual.attnpool(stage4), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no CLS token"):
        backbone(frames, torch.zeros(2, 512))


def test_full_size_resnet50_gives_a_16x8_map_and_1024d_tokens():
    backbone = build_backbone("rn50", 256, 128)
    assert isinstance(backbone, ResNetBackbone) and backbone.cls_dim == 2048 and backbone.embed_dim == 1024
    assert backbone.visual.attnpool.positional_embedding.shape == (129, 2048)
    assert backbone.visual.attnpool.num_heads == 32 and backbone.visual.layer4[0].stride == 1


def test_grad_checkpointing_uses_open_clip_and_keeps_gradients():
    torch.manual_seed(0)
    plain = build_tfclip("tfclip_vit", 4, 2, height=64, width=32, **TINY_VIT)
    checkpointed = build_tfclip("tfclip_vit", 4, 2, height=64, width=32, grad_checkpointing=True, **TINY_VIT)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.backbone.visual.transformer.grad_checkpointing
    assert not plain.backbone.visual.transformer.grad_checkpointing
    clips = torch.randn(2, 2, 3, 64, 32)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        out = model(clips, torch.tensor([0, 1]))
        sum(l.square().sum() for l in out.logits).backward()
        grads.append(model.backbone.visual.conv1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_grad_checkpointing_on_the_cnn_warns_it_does_nothing():
    with pytest.warns(UserWarning, match="no effect on the CNN"):
        build_tfclip("tfclip_rn50", 4, 1, height=64, width=32, grad_checkpointing=True, **TINY_RN)


def test_vit_defaults_are_vit_b16_at_256x128():
    backbone = ViTBackbone()
    assert backbone.visual.positional_embedding.shape == (129, 768)
    assert backbone.visual.proj.shape == (768, 512) and len(backbone.visual.transformer.resblocks) == 12


@pytest.mark.parametrize("layers", [1, 3])
def test_vit_penultimate_is_the_cls_token_before_the_last_block_and_ln_post(layers):
    backbone = build_backbone("vit", 64, 32, vision_width=64, vision_layers=layers, embed_dim=64).eval()
    frames, offset = _frames(), torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out, penultimate = backbone.forward_with_penultimate(frames, offset)
        plain = backbone(frames, offset)
        x = backbone.visual.conv1(frames).flatten(2).transpose(1, 2)
        cls = backbone.visual.class_embedding + offset[:, None]
        x = backbone.visual.ln_pre(torch.cat([cls, x], dim=1) + backbone.visual.positional_embedding)
        *blocks, final = backbone.visual.transformer.resblocks
        inner = x
        for block in blocks:
            inner = block(inner)
        last = final(inner)
    assert penultimate.shape == (3, 64)
    torch.testing.assert_close(out.tokens, plain.tokens, atol=0, rtol=0)
    torch.testing.assert_close(out.cls, plain.cls, atol=0, rtol=0)
    torch.testing.assert_close(penultimate, inner[:, 0])
    torch.testing.assert_close(out.tokens, backbone.visual.ln_post(last))


def test_vit_penultimate_with_grad_checkpointing_keeps_values_and_gradients():
    torch.manual_seed(0)
    plain = build_backbone("vit", 64, 32, **TINY_VIT)
    checkpointed = build_backbone("vit", 64, 32, **TINY_VIT)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.set_grad_checkpointing(True)
    grads = []
    for backbone in (plain, checkpointed):
        out, penultimate = backbone.forward_with_penultimate(_frames())
        (out.cls.square().sum() + penultimate.square().sum()).backward()
        grads.append((penultimate.detach(), backbone.visual.conv1.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_resnet_penultimate_is_the_average_pooled_layer3_map():
    backbone = build_backbone("rn50", 64, 32, **TINY_RN).eval()
    frames = _frames()
    with torch.no_grad():
        out, penultimate = backbone.forward_with_penultimate(frames)
        plain = backbone(frames)
        v = backbone.visual
        layer3 = v.layer3(v.layer2(v.layer1(v.stem(frames))))
    assert penultimate.shape == (3, 16 * 16) and layer3.shape[2:] == (4, 2)
    torch.testing.assert_close(penultimate, layer3.mean(dim=(2, 3)))
    torch.testing.assert_close(out.tokens, plain.tokens, atol=0, rtol=0)
    torch.testing.assert_close(out.cls, plain.cls, atol=0, rtol=0)
    with pytest.raises(ValueError, match="no CLS token for a camera embedding"):
        backbone.forward_with_penultimate(frames, torch.zeros(3, 256))
