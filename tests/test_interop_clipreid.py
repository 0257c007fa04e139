"""CLIP-ReID checkpoint files outside the training engine: rebuilt from their tensors alone
(``interop.build_from_checkpoint``), in torchreid's ``FeatureExtractor`` (the builder fallback and
``register_checkpoint``) and exported to ONNX. Tiny models written under CLIP-ReID's state-dict names."""
import numpy as np
import pytest
import torch
from test_models_text import clipreid_state_dict, tiny_text_model

import tfclip_plugin  # noqa: F401  (registers tfclip_vit / tfclip_rn50 into torchreid)
from tfclip_plugin import host, register_checkpoint
from tfclip_plugin.config import activated_config, get_default_config
from tfclip_plugin.data import CLIP_MEAN, CLIP_STD
from tfclip_plugin.export import main as export_main
from tfclip_plugin.interop import build_from_checkpoint, checkpoint_architecture

HALF = [0.5, 0.5, 0.5]  # CLIP-ReID's ViT normalisation (configs/person/vit_clipreid.yml)


def small_config(height=64, width=32):
    cfg = get_default_config()
    cfg.data.height, cfg.data.width = height, width
    return cfg


def write(tmp_path, name, model):
    path = str(tmp_path / name)
    torch.save({"module." + k: v for k, v in clipreid_state_dict(model).items()}, path)  # as CLIP-ReID saves it
    return path


@pytest.fixture()
def vit_file(tmp_path):
    model = tiny_text_model(seed=3).eval()
    return write(tmp_path, "clip_market1501.pt", model), model


def test_the_architecture_is_read_from_the_tensors(tmp_path, vit_file):
    path, source = vit_file
    with activated_config(small_config()):
        arch = checkpoint_architecture(path)
        assert (arch.name, arch.num_classes, arch.num_cameras, arch.origin, arch.from_config) == (
            "tfclip_vit", 5, 3, "CLIP-ReID", False)
        assert {k: arch.options[k] for k in ("memory", "temporal", "ssp", "sie", "stride", "vision_width",
                                             "vision_layers", "embed_dim", "text_width", "text_layers")} == {
            "memory": "text", "temporal": "tap", "ssp": "none", "sie": True, "stride": 16, "vision_width": 64,
            "vision_layers": 2, "embed_dim": 64, "text_width": 64, "text_layers": 1}
        assert (arch.norm_mean, arch.norm_std) == (tuple(HALF), tuple(HALF))
        model = build_from_checkpoint(path).eval()
        olp = checkpoint_architecture(write(tmp_path, "olp.pt", tiny_text_model(stride=12)))
        assert olp.options["stride"] == 12
        rn50 = checkpoint_architecture(write(tmp_path, "rn50.pt", tiny_text_model("tfclip_rn50", num_cameras=1)))
        assert (rn50.name, rn50.options["vision_width"], rn50.options["vision_layers"], rn50.options["sie"]) == (
            "tfclip_rn50", 8, 1, False)
        with pytest.raises(ValueError, match="holds a CLIP-ReID VIT model; build it as 'tfclip_vit', not "
                                             "'tfclip_rn50'"):
            build_from_checkpoint(path, name="tfclip_rn50")
    clips = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(clips, torch.tensor([0, 2])), source(clips, torch.tensor([0, 2])))
    torch.testing.assert_close(model.memory, source.identity_text_features())
    with pytest.raises(ValueError, match=r"clip_market1501.pt: its positional embedding \(9 rows\) fits no patch "
                                         r"stride at 256x128; use the input size it was trained at"):
        build_from_checkpoint(path)  # the default config's 256x128


def test_feature_extractor_and_a_registered_name_extract_with_the_clipreid_model(vit_file):
    path, source = vit_file
    images = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        expected = source(images)
    fe = host.FeatureExtractor(model_name="tfclip_vit", model_path=path, image_size=(64, 32), device="cpu",
                               pixel_mean=HALF, pixel_std=HALF, verbose=False)
    assert fe.model.memory_mode == "text" and fe.model.feature_dim == 128
    torch.testing.assert_close(fe(images), expected)
    with pytest.warns(UserWarning, match=r"normalised with mean \[0.5, 0.5, 0.5\]"):
        host.FeatureExtractor(model_name="tfclip_vit", model_path=path, image_size=(64, 32), device="cpu",
                              pixel_mean=list(CLIP_MEAN), pixel_std=list(CLIP_STD), verbose=False)
    with activated_config(small_config()):
        name = register_checkpoint("clipreid_tiny_market", path)
        model = host.models.build_model(name, num_classes=1).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected)


def test_onnx_export_of_a_clipreid_file(tmp_path, vit_file):
    path, source = vit_file
    out = str(tmp_path / "clipreid.onnx")
    with activated_config(small_config()):
        assert export_main(["--checkpoint", path, "--out", out, "--image"]) == 0
    import onnxruntime

    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    images = torch.randn(4, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    (ours,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        expected = source(images).numpy()
    assert ours.shape == (4, 128)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
