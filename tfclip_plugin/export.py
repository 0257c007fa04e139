"""ONNX export of a TF-CLIP model's eval forward, and its check against torch with onnxruntime.

The graph is exported by ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript): the legacy
TorchScript exporter (``dynamo=False``) bakes the batch size into the reshapes of TMD's attention, so its graph
fails on any other batch size. Inputs have a dynamic batch axis; the clip length,
height and width are fixed at export. No camera ids are inputs: the exported features carry no SIE camera
embedding, as with torchreid's ``FeatureExtractor``.

Command line: ``python -m tfclip_plugin.export --checkpoint model.pth.tar-80 --out tfclip.onnx [--image]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import List, Optional, Sequence

import numpy as np
import torch

from .models import TFCLIP

DEFAULT_OPSET = 18
PARITY_ATOL = 1e-4  # |onnx - torch| <= atol + rtol * |torch|, elementwise
PARITY_RTOL = 1e-4
CHECK_BATCH_SIZES = (1, 3)


def _input_shape(model: TFCLIP, height: Optional[int], width: Optional[int], seq_len: int,
                 image: bool) -> List[int]:
    size = tuple(model.backbone.image_size)
    if (height or size[0], width or size[1]) != size:
        raise ValueError(f"the model was built for {size[0]}x{size[1]} input; got height={height}, width={width}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    return [3, *size] if image else [seq_len, 3, *size]


def export_onnx(model: TFCLIP, path: str, height: Optional[int] = None, width: Optional[int] = None,
                seq_len: int = 8, image: bool = False, opset: int = DEFAULT_OPSET) -> str:
    """Write the eval forward of ``model`` to ``path`` (one .onnx file, weights inside); returns ``path``.

    Input ``clips`` (B, seq_len, 3, H, W), or with ``image=True`` ``images`` (N, 3, H, W) (one-frame clips,
    torchreid's image convention); output ``features`` (B, feature_dim), the pre-BN eval feature. B is
    dynamic; ``height``/``width`` default to (and must equal) the model's input size.
    """
    shape = _input_shape(model, height, width, seq_len, image)
    name = "images" if image else "clips"
    parameter = next(model.parameters())
    example = torch.randn(2, *shape, device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[name], output_names=["features"],
                dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset, verbose=False,
            )
        program.save(path, external_data=False)
    finally:
        model.train(was_training)
    return path


def check_onnx(model: TFCLIP, path: str, batch_sizes: Sequence[int] = CHECK_BATCH_SIZES, seed: int = 0,
               atol: float = PARITY_ATOL, rtol: float = PARITY_RTOL) -> float:
    """Run the exported graph with onnxruntime (CPU) and ``model`` in eval mode on the same random inputs,
    one batch per size in ``batch_sizes``; return the largest absolute difference.

    Raises ValueError when an output differs by more than ``atol + rtol * |torch output|`` anywhere, or when
    the graph's output shape is not the model's.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    fixed = [int(d) for d in graph_input.shape[1:]]
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    worst = 0.0
    try:
        for batch in batch_sizes:
            inputs = torch.randn(batch, *fixed, generator=generator)
            (ours,) = session.run(["features"], {graph_input.name: inputs.numpy()})
            with torch.no_grad():
                reference = model(inputs.to(device)).float().cpu().numpy()
            if ours.shape != reference.shape:
                raise ValueError(f"{path}: output shape {ours.shape} for input {tuple(inputs.shape)}; the model "
                                 f"gives {reference.shape}")
            difference = np.abs(ours - reference)
            worst = max(worst, float(difference.max()))
            excess = difference - (atol + rtol * np.abs(reference))
            if excess.max() > 0:
                raise ValueError(f"{path}: onnxruntime output differs from torch by up to {difference.max():.3g} "
                                 f"(batch {batch}); tolerance {atol:g} + {rtol:g} * |torch output|")
    finally:
        model.train(was_training)
    return worst


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tfclip_plugin.export --checkpoint CKPT --out FILE.onnx [--image] [--seq-len 8]``."""
    from .interop import build_from_checkpoint

    parser = argparse.ArgumentParser(prog="python -m tfclip_plugin.export",
                                     description="Export a TF-CLIP checkpoint's eval forward to ONNX and check it "
                                                 "against torch with onnxruntime.")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by tfclip-reid training")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--image", action="store_true", help="export the image path (N, 3, H, W) instead of clips")
    parser.add_argument("--seq-len", type=int, default=8, help="frames per clip (fixed in the graph); default 8")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset; default {DEFAULT_OPSET}")
    parser.add_argument("--model", default=None, help="tfclip_vit | tfclip_rn50, for files without a run config")
    args = parser.parse_args(argv)

    model = build_from_checkpoint(args.checkpoint, name=args.model).eval()
    export_onnx(model, args.out, seq_len=args.seq_len, image=args.image, opset=args.opset)
    difference = check_onnx(model, args.out)
    height, width = model.backbone.image_size
    shape = f"(batch, 3, {height}, {width})" if args.image else f"(batch, {args.seq_len}, 3, {height}, {width})"
    print(f"Wrote {args.out}: {'images' if args.image else 'clips'} {shape} -> features (batch, {model.feature_dim}); "
          f"onnxruntime vs torch max abs difference {difference:.3g} over batches of "
          f"{', '.join(map(str, CHECK_BATCH_SIZES))} (tolerance {PARITY_ATOL:g} + {PARITY_RTOL:g} * |torch|)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
