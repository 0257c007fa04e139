"""ONNX export of the eval forward (clips and images, dynamic batch) checked with onnxruntime against torch."""
import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from tfclip_plugin.files.checkpoint_file import save_checkpoint
from tfclip_plugin.config import get_default_config
from tfclip_plugin.export import PARITY_ATOL, PARITY_RTOL, check_onnx, export_onnx, main
from tfclip_plugin.interop import build_from_checkpoint
from tfclip_plugin.models import build_tfclip

TINY = {"vision_width": 64, "vision_layers": 2, "embed_dim": 64}


def graph_input(path):
    (value,) = onnx.load(path).graph.input
    dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    return value.name, dims


def run(path, inputs: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]


@pytest.fixture(scope="module")
def exported_checkpoint(tmp_path_factory):
    """(checkpoint, onnx path, CLI output): a tiny ViT checkpoint in our format exported by the command line."""
    folder = tmp_path_factory.mktemp("onnx")
    cfg = get_default_config()
    cfg.data.height, cfg.data.width = 64, 32
    for key, value in TINY.items():
        setattr(cfg.tfclip, key, value)
    torch.manual_seed(0)
    model = build_tfclip("tfclip_vit", 5, 3, height=64, width=32, **TINY)
    model.set_memory(torch.randn(5, 64))
    checkpoint = save_checkpoint({"state_dict": model.state_dict(), "epoch": 1, "rank1": 0.0, "config": cfg.dump()},
                                 str(folder / "model.pth.tar-1"))
    out = str(folder / "tfclip_vit.onnx")
    return checkpoint, out, main(["--checkpoint", checkpoint, "--out", out, "--seq-len", "4"])


def test_cli_exports_clips_with_a_dynamic_batch(exported_checkpoint):
    checkpoint, path, status = exported_checkpoint
    assert status == 0
    onnx.checker.check_model(onnx.load(path))
    name, dims = graph_input(path)
    assert name == "clips" and isinstance(dims[0], str) and dims[1:] == [4, 3, 64, 32]
    model = build_from_checkpoint(checkpoint).eval()
    for batch in (2, 5):
        clips = torch.randn(batch, 4, 3, 64, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(clips).numpy()
        ours = run(path, clips)
        assert ours.shape == (batch, 192)
        np.testing.assert_allclose(ours, expected, rtol=PARITY_RTOL, atol=PARITY_ATOL)


def test_parity_check_fails_for_another_model(exported_checkpoint):
    torch.manual_seed(1)
    other = build_tfclip("tfclip_vit", 5, 3, height=64, width=32, **TINY)
    with pytest.raises(ValueError, match=r"tfclip_vit\.onnx: onnxruntime output differs from torch by up to .* "
                                         r"\(batch 1\); tolerance 0.0001 \+ 0.0001"):
        check_onnx(other, exported_checkpoint[1])


def test_image_path_export(tmp_path):
    torch.manual_seed(0)
    model = build_tfclip("tfclip_vit", 5, 3, height=64, width=32, **TINY)
    path = export_onnx(model, str(tmp_path / "images.onnx"), 64, 32, image=True)
    assert model.training  # the mode is restored
    name, dims = graph_input(path)
    assert name == "images" and isinstance(dims[0], str) and dims[1:] == [3, 64, 32]
    assert check_onnx(model, path, batch_sizes=(1, 4)) < PARITY_ATOL
    images = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        np.testing.assert_allclose(run(path, images), model.eval()(images[:, None]).numpy(), rtol=PARITY_RTOL,
                                   atol=PARITY_ATOL)  # an image is a one-frame clip


def test_cnn_export(tmp_path):
    torch.manual_seed(0)
    model = build_tfclip("tfclip_rn50", 5, 1, height=64, width=32, vision_width=16, vision_layers=1, embed_dim=64,
                         sie=False)
    path = export_onnx(model, str(tmp_path / "rn50.onnx"), seq_len=2)
    assert graph_input(path)[1][1:] == [2, 3, 64, 32]
    assert check_onnx(model, path) < PARITY_ATOL


def test_export_refuses_another_input_size(tmp_path):
    model = build_tfclip("tfclip_vit", 5, 3, height=64, width=32, **TINY)
    with pytest.raises(ValueError, match="the model was built for 64x32 input; got height=128, width=64"):
        export_onnx(model, str(tmp_path / "x.onnx"), 128, 64)
