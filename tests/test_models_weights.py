"""tfclip.clip_weights: OpenAI TorchScript archives, state dicts, open_clip checkpoints (tiny files in tmp_path)."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from safetensors.torch import save_file
from torch import nn

from model_fixtures import TINY_RN, TINY_VIT
from tfclip_plugin.models import build_tfclip
from tfclip_plugin.models.clip_weights import is_torchscript_archive, resize_grid_embedding

TEXT = dict(context_length=8, vocab_size=50, width=64, heads=1, layers=1)


def _openai_state_dict(vision_cfg):
    """A tiny CLIP in OpenAI's key layout at 224x224, stored fp16 as OpenAI's archives are."""
    torch.manual_seed(1)
    clip = CLIP(embed_dim=64, vision_cfg=vision_cfg, text_cfg=TEXT, quick_gelu=True)
    state_dict = {k: v.half() if v.is_floating_point() else v for k, v in clip.state_dict().items()}
    state_dict.update(input_resolution=torch.tensor(224), context_length=torch.tensor(8), vocab_size=torch.tensor(50))
    return state_dict


def _vit_state_dict():
    return _openai_state_dict(dict(image_size=224, layers=2, width=64, head_width=64, patch_size=16))


def _save_torchscript(state_dict, path):
    """A TorchScript archive whose state dict is ``state_dict`` (nested modules holding the tensors)."""
    root = nn.Module()
    for key, value in state_dict.items():
        *path_names, leaf = key.split(".")
        module = root
        for name in path_names:
            if name not in module._modules:
                module.add_module(name, nn.Module())
            module = module._modules[name]
        if value.is_floating_point():
            module.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
        else:
            module.register_buffer(leaf, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated (FutureWarning or DeprecationWarning)
        torch.jit.script(root).save(str(path))


def _expected_backbone(state_dict, grid):
    visual = {k[len("visual."):]: v.float() for k, v in state_dict.items() if k.startswith("visual.")}  # ViT: floats
    visual["positional_embedding"] = resize_grid_embedding(visual["positional_embedding"], grid)
    return visual


def _assert_loaded(model, expected):
    loaded = model.backbone.visual.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert loaded[key].dtype == (torch.float32 if value.is_floating_point() else torch.int64), key
        torch.testing.assert_close(loaded[key], value, msg=key)


def test_resize_grid_embedding_is_bilinear_without_antialias_and_keeps_cls():
    embedding = torch.randn(1 + 14 * 14, 8)
    resized = resize_grid_embedding(embedding.half(), (16, 8))
    assert resized.dtype == torch.float32 and resized.shape == (129, 8)
    torch.testing.assert_close(resized[0], embedding[0].half().float())
    grid = embedding[1:].half().float().reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(16, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resized[1:], expected.permute(0, 2, 3, 1).reshape(128, 8))
    torch.testing.assert_close(resize_grid_embedding(embedding, (14, 14)), embedding)
    with pytest.raises(ValueError, match="not a square grid"):
        resize_grid_embedding(torch.randn(1 + 12, 8), (4, 2))


def test_openai_torchscript_archive_loads_visual_weights_fp32_with_resized_grid(tmp_path):
    state_dict = _vit_state_dict()
    path = tmp_path / "ViT-B-16.pt"
    _save_torchscript(state_dict, path)
    assert is_torchscript_archive(str(path))
    model = build_tfclip("tfclip_vit", 5, 2, pretrained=True, height=64, width=32, clip_weights=str(path), **TINY_VIT)
    _assert_loaded(model, _expected_backbone(state_dict, (4, 2)))
    assert model.backbone.visual.positional_embedding.shape == (9, 64)


def test_plain_and_open_clip_state_dicts_load_weights_only(tmp_path, monkeypatch):
    state_dict = _vit_state_dict()
    expected = _expected_backbone(state_dict, (4, 2))
    visual_only = {k[len("visual."):]: v for k, v in state_dict.items() if k.startswith("visual.")}
    files = {
        "openai_sd.pt": state_dict,
        "visual_only.pt": visual_only,
        "open_clip_epoch.pt": {"epoch": 3, "state_dict": {"module." + k: v for k, v in state_dict.items()}},
    }
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("state dicts must not go through jit"))
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        assert not is_torchscript_archive(str(tmp_path / name))
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp_path / "open_clip_model.safetensors"))
    for name in [*files, "open_clip_model.safetensors"]:
        model = build_tfclip("tfclip_vit", 5, 2, pretrained=True, height=64, width=32,
                             clip_weights=str(tmp_path / name), **TINY_VIT)
        _assert_loaded(model, expected)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(2), "payload": print}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        build_tfclip("tfclip_vit", 5, 2, pretrained=True, height=64, width=32, clip_weights=str(path), **TINY_VIT)


def test_resnet_weights_load_with_the_attention_pool_grid_resized(tmp_path):
    state_dict = _openai_state_dict(dict(image_size=224, layers=(1, 1, 1, 1), width=16, head_width=64))
    path = tmp_path / "RN50.pt"
    _save_torchscript(state_dict, path)
    model = build_tfclip("tfclip_rn50", 5, 1, pretrained=True, height=64, width=32, clip_weights=str(path), **TINY_RN)
    expected = {k[len("visual."):]: v.float() if v.is_floating_point() else v
                for k, v in state_dict.items() if k.startswith("visual.")}
    expected["attnpool.positional_embedding"] = resize_grid_embedding(expected["attnpool.positional_embedding"], (4, 2))
    _assert_loaded(model, expected)


def test_weights_of_another_architecture_or_size_are_rejected(tmp_path):
    torch.save(_vit_state_dict(), tmp_path / "vit.pt")
    with pytest.raises(ValueError, match=r"vit.pt' does not fit the backbone \(expected CLIP ModifiedResNet"):
        build_tfclip("tfclip_rn50", 5, 1, pretrained=True, height=64, width=32, clip_weights=str(tmp_path / "vit.pt"),
                     **TINY_RN)
    with pytest.raises(ValueError, match=r"mismatched shapes: .*file \(64, 3, 16, 16\), model \(128, 3, 16, 16\)"):
        build_tfclip("tfclip_vit", 5, 1, pretrained=True, height=64, width=32, clip_weights=str(tmp_path / "vit.pt"),
                     vision_width=128, vision_layers=2, embed_dim=64)
    with pytest.raises(FileNotFoundError, match="no such file .*missing.pt"):
        build_tfclip("tfclip_vit", 5, 1, pretrained=True, height=64, width=32,
                     clip_weights=str(tmp_path / "missing.pt"), **TINY_VIT)


def test_pretrained_false_or_empty_path_keeps_random_init(tmp_path):
    torch.save(_vit_state_dict(), tmp_path / "vit.pt")
    torch.manual_seed(3)
    a = build_tfclip("tfclip_vit", 5, 2, pretrained=False, height=64, width=32, clip_weights=str(tmp_path / "vit.pt"),
                     **TINY_VIT)
    torch.manual_seed(3)
    b = build_tfclip("tfclip_vit", 5, 2, pretrained=True, height=64, width=32, clip_weights="", **TINY_VIT)
    torch.testing.assert_close(a.backbone.visual.conv1.weight, b.backbone.visual.conv1.weight)


def test_openai_tag_goes_through_open_clips_quickgelu_models(monkeypatch):
    import open_clip

    calls = []
    torch.manual_seed(1)
    tiny_clip = CLIP(embed_dim=64, vision_cfg=dict(image_size=224, layers=2, width=64, head_width=64, patch_size=16),
                     text_cfg=TEXT, quick_gelu=True)

    def create_model(name, pretrained=None, **kwargs):
        calls.append((name, pretrained))
        return tiny_clip

    monkeypatch.setattr(open_clip, "create_model", create_model)
    model = build_tfclip("tfclip_vit", 5, 2, pretrained=True, height=64, width=32, clip_weights="openai", **TINY_VIT)
    assert calls == [("ViT-B-16-quickgelu", "openai")]
    expected = {"visual." + k: v for k, v in tiny_clip.visual.state_dict().items()}
    _assert_loaded(model, _expected_backbone(expected, (4, 2)))
