"""Training-step time and peak memory of TF-CLIP (ViT-B/16, 256x128) for a P x K x T batch.

One step = forward (train mode, CLIP-Memory of 625 rows set, so SSP and V2M run), TF-CLIP's loss, backward
and Adam (``engine.optim.build_optimizer``), under ``tfclip.precision`` (fp32, bf16 autocast, fp16 autocast
with GradScaler). Variants: precisions x strides x gradient checkpointing, and with ``--compile MODES`` each of
ours also with its training forward under ``torch.compile(mode=...)`` (what ``tfclip.compile`` does; the first
step, compilation included, is ``first_step_s``). With ``--reference-dir`` the
reference implementation's step is measured in the same process, run as shipped: fp32 on a CPU (its
``torch.cuda.amp.autocast`` does nothing there), fp16 autocast with GradScaler on a GPU; its outputs go
through the same loss and a plain Adam over its trainable parameters.

On a CPU the variants are timed round-robin (load changes hit all alike) and memory is the resident-set
increase during one step; on a GPU each variant runs alone and memory is the allocator's peak (weights,
Adam state and activations).

    python benchmarks/train_step.py                       # CPU: 2 x 1 x 8, fp32 vs bf16
    python benchmarks/train_step.py --reference-dir ../TF-CLIP
    python benchmarks/train_step.py --device cuda --ids 4 --instances 4 --precisions bf16,fp16 \\
        --strides 16,12 --checkpointing both
    python benchmarks/train_step.py --device cuda --ids 4 --instances 4 --precisions bf16 --compile default
"""
from __future__ import annotations

import argparse
import gc
import itertools
from typing import Callable, Dict, List, Tuple

import torch

from common import (NUM_CAMERAS, NUM_CLASSES, PeakMemory, add_common_arguments, build_ours, build_reference, emit,
                    interleaved, machine, setup, summary, timed, with_multihead_attention)
from tfclip_plugin.config import get_default_config
from tfclip_plugin.engine.features import autocast
from tfclip_plugin.engine.losses import TFCLIPLoss
from tfclip_plugin.engine.optim import backward_and_step, build_optimizer
from tfclip_plugin.models.tfclip import TFCLIPOutput

Variant = Tuple[str, str, int, bool]  # (implementation, precision, stride, grad checkpointing)
COMPILED = "ours-compile-"  # implementation prefix of a compiled variant: ours-compile-<mode>


def batch(args, device: torch.device):
    """Random clips (P*K, T, 3, 256, 128), camera ids, P identities x K clips."""
    generator = torch.Generator().manual_seed(0)
    b = args.ids * args.instances
    clips = torch.randn(b, args.frames, 3, 256, 128, generator=generator).to(device)
    camids = torch.randint(0, NUM_CAMERAS, (b,), generator=generator).to(device)
    pids = torch.arange(args.ids).repeat_interleave(args.instances).to(device)
    return clips, camids, pids


def our_step(args, device: torch.device, precision: str, stride: int, checkpointing: bool,
             multihead: bool = False, compile_mode: str = "") -> Callable[[], None]:
    model = build_ours(stride=stride, tiny=args.tiny, grad_checkpointing=checkpointing)
    if multihead:
        with_multihead_attention(model)
    model = model.to(device).train()
    forward = torch.compile(model, mode=compile_mode) if compile_mode else model
    model.set_memory(torch.randn(NUM_CLASSES, model.embed_dim))
    optimizer = build_optimizer(model, get_default_config())
    criterion = TFCLIPLoss(NUM_CLASSES, use_gpu=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    clips, camids, pids = batch(args, device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            output = forward(clips, camids)
        backward_and_step(criterion(output, pids)["loss"], optimizer, scaler)

    return step


def reference_step(args, device: torch.device, stride: int) -> Callable[[], None]:
    model = build_reference(args.reference_dir, stride=stride, seq_len=args.frames).to(device).train()
    memory = torch.randn(NUM_CLASSES, 512, device=device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-6, weight_decay=1e-4)
    criterion = TFCLIPLoss(NUM_CLASSES, use_gpu=device.type == "cuda")
    on_gpu = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if on_gpu else None
    clips, camids, pids = batch(args, device)

    def step() -> None:
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.float16, enabled=on_gpu):
            scores, features, v2m = model(clips, cam_label=camids, text_features2=memory)
        output = TFCLIPOutput(logits=scores[:3], frame_logits=scores[3], features=features, v2m_logits=v2m)
        backward_and_step(criterion(output, pids)["loss"], optimizer, scaler)

    return step


def variants(args) -> List[Variant]:
    checkpointing = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
    ours = [("ours", p, s, c) for s, p, c in itertools.product(args.strides, args.precisions, checkpointing)]
    reference = [("reference", "fp16" if args.device.startswith("cuda") else "fp32", s, False)
                 for s in args.strides] if args.reference_dir else []
    multihead = [("ours-mha",) + v[1:] for v in ours] if args.mha else []
    compiled = [(COMPILED + mode,) + v[1:] for mode in args.compile for v in ours]
    return reference + ours + multihead + compiled


def make_step(args, device: torch.device, variant: Variant) -> Callable[[], None]:
    implementation, precision, stride, checkpointing = variant
    if implementation == "reference":
        return reference_step(args, device, stride)
    return our_step(args, device, precision, stride, checkpointing, multihead=implementation == "ours-mha",
                    compile_mode=implementation[len(COMPILED):] if implementation.startswith(COMPILED) else "")


def record(args, variant: Variant, seconds: List[float], memory: PeakMemory, first_step: float = None) -> Dict:
    implementation, precision, stride, checkpointing = variant
    frames = args.ids * args.instances * args.frames
    out = {"benchmark": "train_step", "impl": implementation, "precision": precision, "stride": stride,
           "grad_checkpointing": checkpointing, "batch": f"{args.ids}x{args.instances}x{args.frames}",
           "frames": frames, "device": args.device,
           "model": "tiny" if args.tiny and implementation != "reference" else "ViT-B/16"}
    out.update(summary(seconds))
    out["frames_per_s"] = round(frames / out["median_s"], 2)
    out["peak_mib"] = round(memory.mib, 1)
    out["memory"] = memory.kind
    out["compile"] = implementation[len(COMPILED):] if implementation.startswith(COMPILED) else "off"
    if first_step is not None:
        out["first_step_s"] = round(first_step, 2)
    return out


def measure_interleaved(args, device: torch.device, todo: List[Variant]) -> List[Dict]:
    steps = {variant: make_step(args, device, variant) for variant in todo}
    seconds = interleaved(steps, args.repeats, args.warmup, device)
    records = []
    for variant, step in steps.items():
        with PeakMemory(device) as memory:
            step()
        records.append(record(args, variant, seconds[variant], memory))
    return records


def measure_alone(args, device: torch.device, variant: Variant) -> Dict:
    try:
        step = make_step(args, device, variant)
        first = timed(step, device)
        for _ in range(args.warmup - 1):
            step()
        with PeakMemory(device) as memory:
            seconds = [timed(step, device) for _ in range(args.repeats)]
        return record(args, variant, seconds, memory, first_step=first)
    except torch.cuda.OutOfMemoryError as error:
        implementation, precision, stride, checkpointing = variant
        return {"benchmark": "train_step", "impl": implementation, "precision": precision, "stride": stride,
                "grad_checkpointing": checkpointing, "batch": f"{args.ids}x{args.instances}x{args.frames}",
                "device": args.device, "out_of_memory": str(error).split("\n")[0][:200]}
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def add_ratios(r: Dict, earlier: List[Dict]) -> Dict:
    """Add speedup_vs_reference (same stride) and speedup_vs_fp32 (ours, same stride and checkpointing) to
    ``r`` from the ``earlier`` records."""
    if not (r.get("impl") in ("ours", "ours-mha") or r.get("impl", "").startswith(COMPILED)) or "median_s" not in r:
        return r
    for x in earlier:
        if "median_s" not in x or x.get("stride") != r["stride"] or x["model"] != r["model"]:
            continue
        if x["impl"] == "reference":
            r["speedup_vs_reference"] = round(x["median_s"] / r["median_s"], 2)
        elif x["impl"] == r["impl"] and x["precision"] == "fp32" != r["precision"] \
                and x["grad_checkpointing"] == r["grad_checkpointing"]:
            r["speedup_vs_fp32"] = round(x["median_s"] / r["median_s"], 2)
        elif x["impl"] == "ours" and r["impl"].startswith(COMPILED) and x["precision"] == r["precision"] \
                and x["grad_checkpointing"] == r["grad_checkpointing"]:
            r["speedup_vs_eager"] = round(x["median_s"] / r["median_s"], 2)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--ids", type=int, default=2, help="P identities per batch")
    parser.add_argument("--instances", type=int, default=1, help="K clips per identity")
    parser.add_argument("--frames", type=int, default=8, help="T frames per clip")
    parser.add_argument("--precisions", default="", help="comma list of fp32,bf16,fp16 (default: CPU fp32,bf16; "
                                                          "GPU bf16,fp16)")
    parser.add_argument("--strides", default="16", help="comma list of patch strides, e.g. 16,12")
    parser.add_argument("--checkpointing", choices=("off", "on", "both"), default="off")
    parser.add_argument("--compile", default="", help="comma list of torch.compile modes (default, "
                        "reduce-overhead, max-autotune, ...): each of ours also compiled (impl ours-compile-<mode>)")
    parser.add_argument("--mha", action="store_true", help="also each of ours with open_clip's nn.MultiheadAttention "
                        "put back (impl 'ours-mha': the attention path before models/attention.py)")
    args = parser.parse_args()
    device = setup(args)
    args.precisions = args.precisions.split(",") if args.precisions else (
        ["bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
    args.strides = [int(s) for s in args.strides.split(",")]
    args.compile = [mode for mode in args.compile.split(",") if mode]
    emit({"benchmark": "train_step", "machine": machine(device), "args": vars(args)})
    todo = variants(args)
    records: List[Dict] = []
    if device.type == "cuda":  # one variant at a time (peak memory of its own), printed as it ends
        for variant in todo:
            records.append(add_ratios(measure_alone(args, device, variant), records))
            emit(records[-1])
    else:
        for r in measure_interleaved(args, device, todo):
            records.append(add_ratios(r, records))
            emit(r)


if __name__ == "__main__":
    main()
