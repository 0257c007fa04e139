"""Model-FLOP utilisation of the recorded runs: achieved model FLOP/s over the device's bf16 peak.

Model FLOPs are counted once per stride with torch's ``FlopCounterMode`` (matrix products: linear layers,
convolutions, attention products; what ``models/complexity.py`` counts) on TF-CLIP ViT-B/16 at 256x128:

- evaluation: one 8-frame clip in eval mode (backbone, TMD, heads), per frame;
- training: forward (with a 625-row CLIP-Memory, so SSP and V2M run), TF-CLIP's loss and backward of a
  2 x 2 x 8 batch, per frame (gradient checkpointing's recomputation is not model FLOPs, as MFU's definition
  says; Adam's elementwise work is not counted either).

Then every record of ``results/*.jsonl`` with a rate (``inference``, ``train_step``, ``dense_eval``, ``phase1``)
becomes one line: achieved TFLOP/s = frames/s x FLOPs per frame (dense evaluation and phase 1: the computed
frames, padding included), ``mfu`` = achieved / peak. Peaks: an H200's dense bf16 tensor-core rate, 989 TFLOP/s
(fp16 is the same; fp32 rows are also divided by it, so they show what fp32 leaves unused); on a CPU, which has
no published bf16 peak here, the highest bf16 GEMM rate measured on that machine in the same file (``gemm``
lines, ViT-B/16's MLP shape), else in any file of the same CPU: the MFU of a CPU row is relative to what its
matrix units reached on a plain product.

    python benchmarks/mfu.py                    # counts FLOPs (a minute on 2 cores), then one line per record
"""
from __future__ import annotations

import glob
import json
import os.path as osp
from typing import Dict, List

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import NUM_CAMERAS, NUM_CLASSES, build_ours, emit

H200_BF16_PEAK = 989e12
RESULTS = osp.join(osp.dirname(osp.abspath(__file__)), "results")


def flops_per_frame(stride: int) -> Dict[str, float]:
    """{'eval': FLOPs per frame of evaluation, 'train': per frame of a training step} at ``stride``."""
    from tfclip_plugin.engine.losses import TFCLIPLoss

    torch.manual_seed(0)
    model = build_ours(stride=stride)
    model.set_memory(torch.randn(NUM_CLASSES, model.embed_dim))
    clip = torch.randn(1, 8, 3, 256, 128)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(clip, torch.zeros(1, dtype=torch.long))
    evaluation = counter.get_total_flops() / 8
    clips = torch.randn(4, 8, 3, 256, 128)
    with FlopCounterMode(display=False) as counter:
        output = model.train()(clips, torch.arange(4) % NUM_CAMERAS)
        TFCLIPLoss(NUM_CLASSES)(output, torch.tensor([0, 0, 1, 1]))["loss"].backward()
    return {"eval": evaluation, "train": counter.get_total_flops() / 32}


def records() -> List[Dict]:
    """Every line of results/*.jsonl, with the file, the run index and that run's machine line."""
    out = []
    for path in sorted(glob.glob(osp.join(RESULTS, "*.jsonl"))):
        run, machine = -1, {}
        for line in open(path):
            record = json.loads(line)
            if "machine" in record:
                run, machine = run + 1, record["machine"]
                continue
            out.append(dict(record, _file=osp.basename(path), _run=run, _machine=machine))
    return out


def main() -> None:
    counts = {stride: flops_per_frame(stride) for stride in (16, 12)}
    emit({"benchmark": "model_flops", "model": "TF-CLIP ViT-B/16 256x128",
          "gflops_per_frame": {str(s): {k: round(v / 1e9, 2) for k, v in c.items()} for s, c in counts.items()}})
    everything = records()
    cpu_peaks: Dict[str, float] = {}
    for r in everything:
        if r.get("benchmark") == "gemm" and r.get("device") == "cpu":
            key = r["_machine"].get("cpu", "cpu")
            cpu_peaks[key] = max(cpu_peaks.get(key, 0.0), r["bf16_gflops"] * 1e9)
    for r in everything:
        kind = r.get("benchmark")
        stride = int(r.get("stride", 16))
        if kind == "inference" and "frames_per_s" in r and r.get("model") == "ViT-B/16":
            rate, flops, what = r["frames_per_s"], counts[stride]["eval"], r["variant"]
        elif kind == "train_step" and "frames_per_s" in r and r.get("model") == "ViT-B/16":
            rate, flops = r["frames_per_s"], counts[stride]["train"]
            what = f"{r['impl']} {r['precision']} stride {stride}" + (" ckpt" if r["grad_checkpointing"] else "")
        elif kind in ("dense_eval", "phase1") and "computed_frames_per_s" in r and "TF-CLIP" in str(r.get("model")):
            rate, flops, what = r["computed_frames_per_s"], counts[16]["eval"], f"{r['pipeline']} {r['precision']}"
        elif kind == "phase1" and r.get("model") == "ViT-B/16" and "frames_per_s" in r:
            rate, flops, what = r["frames_per_s"], counts[16]["eval"], f"{r['pipeline']} {r['precision']}"
        else:
            continue
        gpu = r["_machine"].get("gpu")
        if gpu:
            peak, peak_is = H200_BF16_PEAK, "H200 dense bf16 peak"
        else:
            peak = cpu_peaks.get(r["_machine"].get("cpu", "cpu"))
            peak_is = "highest measured bf16 GEMM rate of this CPU"
            if not peak:
                continue
        achieved = rate * flops
        emit({"benchmark": "mfu", "file": r["_file"], "run": r["_run"], "kind": kind, "what": what,
              "device": gpu or r["_machine"].get("cpu"), "frames_per_s": rate,
              "achieved_tflops": round(achieved / 1e12, 3), "peak_tflops": round(peak / 1e12, 3), "peak": peak_is,
              "mfu": round(achieved / peak, 4)})


if __name__ == "__main__":
    main()
