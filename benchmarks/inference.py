"""Inference frames per second of TF-CLIP (ViT-B/16, 256x128, eval features) per precision.

Variants (eval mode, ``torch.no_grad``, a batch of ``--clips`` clips of ``--frames`` frames per forward):

- ``reference``: the reference implementation (``--reference-dir``) as shipped: fp32 on a CPU, fp16 autocast
  on a GPU;
- ``fp32``: ours in fp32;
- ``bf16`` / ``fp16``: ours under ``torch.autocast`` (what ``tfclip.precision`` / ``tfclip.test_precision``
  do in phase 1 and evaluation);
- ``bf16-weights``: ours with the weights cast to bfloat16 (``model.to(torch.bfloat16)``), no autocast.
- ``fp32-mha`` / ``bf16-mha`` (on request): as ``fp32`` / ``bf16`` with open_clip's ``nn.MultiheadAttention``
  put back in place of ``models/attention.py`` (the path before it).

Each variant's features are compared with ours in fp32 (max absolute difference, lowest cosine similarity); with
``--reference-dir`` ours carry the reference's weights, so ``fp32`` is also a parity check. A ``gemm`` line
gives this machine's fp32 and bf16 matrix-product rates at the ViT's MLP shape: their ratio bounds what
bf16 can gain over fp32 for a model that is mostly matrix products.

    python benchmarks/inference.py                          # CPU: 2 clips x 8 frames
    python benchmarks/inference.py --reference-dir ../TF-CLIP --clips 4
    python benchmarks/inference.py --device cuda --clips 64 --variants fp32,bf16,fp16,bf16-weights
"""
from __future__ import annotations

import argparse
import copy
from typing import Callable, Dict

import torch
import torch.nn.functional as F

from common import (NUM_CAMERAS, add_common_arguments, build_ours, build_reference, emit, gemm_rates, interleaved,
                    machine, setup, summary, with_multihead_attention)
from tfclip_plugin.engine.features import autocast
from tfclip_plugin.models import load_official_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--clips", type=int, default=2, help="clips per forward")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--variants", default="", help="comma list of fp32,bf16,fp16,bf16-weights,fp32-mha,bf16-mha "
                        "(default: CPU fp32,bf16,bf16-weights; GPU fp32,bf16,fp16,bf16-weights)")
    args = parser.parse_args()
    device = setup(args)
    names = args.variants.split(",") if args.variants else (
        ["fp32", "bf16", "fp16", "bf16-weights"] if device.type == "cuda" else ["fp32", "bf16", "bf16-weights"])
    emit({"benchmark": "inference", "machine": machine(device), "args": vars(args)})
    emit(gemm_rates(device, args.clips * args.frames * 129, args.repeats))

    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(args.clips, args.frames, 3, 256, 128, generator=generator).to(device)
    camids = torch.randint(0, NUM_CAMERAS, (args.clips,), generator=generator).to(device)
    ours = build_ours(stride=args.stride, tiny=args.tiny).eval()
    calls: Dict[str, Callable[[], torch.Tensor]] = {}
    if args.reference_dir:
        reference = build_reference(args.reference_dir, stride=args.stride, seq_len=args.frames).eval()
        if not args.tiny:
            load_official_checkpoint(ours, reference.state_dict())
        reference.to(device)
        on_gpu = device.type == "cuda"

        def run_reference() -> torch.Tensor:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=on_gpu):
                return reference(clips, cam_label=camids)

        calls["reference"] = run_reference
    ours.to(device)
    weights_bf16 = copy.deepcopy(ours).to(torch.bfloat16) if "bf16-weights" in names else None
    multihead = with_multihead_attention(copy.deepcopy(ours)) if any(n.endswith("-mha") for n in names) else None

    def run(precision: str, model: torch.nn.Module = ours) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            with torch.no_grad(), autocast(device, precision):
                return model(clips, camids)
        return call

    def run_bf16_weights() -> torch.Tensor:
        with torch.no_grad():
            return weights_bf16(clips.to(torch.bfloat16), camids)

    for name in names:
        if name == "bf16-weights":
            calls[name] = run_bf16_weights
        elif name.endswith("-mha"):
            calls[name] = run(name[:-len("-mha")], multihead)
        else:
            calls[name] = run(name)

    expected = run("fp32")().float()
    seconds = interleaved(calls, args.repeats, args.warmup, device)
    frames = args.clips * args.frames
    base = {name: s for name, s in seconds.items()}
    for name, s in seconds.items():
        features = calls[name]().float()
        record = {"benchmark": "inference", "variant": name, "stride": args.stride, "clips": args.clips,
                  "frames_per_forward": frames, "device": device.type,
                  "model": "ViT-B/16" if name == "reference" or not args.tiny else "tiny"}
        record.update(summary(s))
        record["frames_per_s"] = round(frames / record["median_s"], 2)
        for other in ("reference", "fp32"):
            if other in base and other != name and (other == "fp32" or not args.tiny):
                record[f"speedup_vs_{other}"] = round(summary(base[other])["median_s"] / record["median_s"], 2)
        if name != "reference" or not args.tiny:
            record["max_abs_diff_vs_fp32"] = float(f"{(features - expected).abs().max().item():.3g}")
            record["min_cosine_vs_fp32"] = round(F.cosine_similarity(features, expected, dim=1).min().item(), 6)
        emit(record)


if __name__ == "__main__":
    main()
