"""Phase 1 (CLIP-Memory construction) seconds per 1,000 training tracklets, on a generated synthvid.

- ``ours``: ``engine.memory.build_clip_memory``: the dense 8-frame chunks of many tracklets share a forward
  (``--batch-size`` clips), ``--workers`` loader processes, pinned memory on a GPU, ``tfclip.precision``
  autocast (fp32 and bf16 here);
- ``per-tracklet``: the reference's schedule on the same loading code: one forward per tracklet holding all
  its chunks (the reference's stage-1 loader has batch size 1), fp32; the memory is built from those features
  the same way, and must equal ours in fp32 (``max_abs_diff_vs_ours_fp32``).

    python benchmarks/phase1.py                           # 24 tracklets of 8-16 frames, ViT-B/16
    python benchmarks/phase1.py --tiny --tracklets 400    # the loading/batching overhead alone
    python benchmarks/phase1.py --device cuda --tracklets 2000 --max-frames 60 --batch-size 64 --workers 8
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Dict, List

import torch
from torch.utils.data import DataLoader

from common import add_common_arguments, build_ours, emit, machine, setup, synchronize
from tfclip_plugin.data import DenseClipDataset, build_sequence_transforms, generate_synthvid
from tfclip_plugin.data.datasets.synthvid import SynthVid
from tfclip_plugin.engine.memory import build_clip_memory, identity_means

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def per_tracklet_memory(model, tracklets: List[tuple], transform, num_classes: int, workers: int,
                        device: torch.device) -> torch.Tensor:
    """One forward per tracklet (all its chunks), fp32; then the same identity means."""
    dataset = DenseClipDataset(tracklets, transform, seq_len=8)
    batches = [list(torch.nonzero(torch.as_tensor(dataset.tracklet_index == i)).flatten().tolist())
               for i in range(dataset.num_tracklets)]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=device.type == "cuda")
    features = []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            clips = transform.normaliser(batch["img"], device)  # uint8 clips -> normalised float on the device
            features.append(model.encode_for_memory(clips).mean(dim=0).float().cpu())
    return identity_means(torch.stack(features), [t[1] for t in tracklets], num_classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--tracklets", type=int, default=24, help="training tracklets (2 per identity)")
    parser.add_argument("--max-frames", type=int, default=16, help="longest tracklet (8 frames at least)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per forward in ours")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="loader processes (default: half the cores; more on a 2-core CPU slows the forward)")
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    device = setup(args)
    emit({"benchmark": "phase1", "machine": machine(device), "args": vars(args)})
    transform = build_sequence_transforms(256, 128, [], MEAN, STD)[1]
    with tempfile.TemporaryDirectory() as root:
        generate_synthvid(root, num_train_ids=max(args.tracklets // 2, 1), num_test_ids=1, num_cameras=2,
                          min_cameras_per_id=2, max_cameras_per_id=2, max_tracklets_per_camera=1, min_frames=8,
                          max_frames=args.max_frames, height=128, width=64, num_junk=0, num_distractors=0,
                          short_fraction=0.0)
        data = SynthVid(root=root, transform=transform, verbose=False)
        tracklets, num_classes = data.train, data.num_train_pids
        model = build_ours(num_classes=num_classes, tiny=args.tiny).to(device)
        base = {"benchmark": "phase1", "device": device.type, "model": "tiny" if args.tiny else "ViT-B/16",
                "tracklets": len(tracklets), "frames": sum(len(t[0]) for t in tracklets),
                "workers": args.workers}

        def report(record: Dict, seconds: float) -> None:
            record = dict(base, **record, seconds=round(seconds, 3))
            record["seconds_per_1000_tracklets"] = round(1000 * seconds / len(tracklets), 1)
            record["frames_per_s"] = round(base["frames"] / seconds, 2)
            emit(record)

        with torch.no_grad():  # CUDA/cuDNN start-up outside the timed pipelines
            for _ in range(args.warmup):
                model.eval().encode_for_memory(torch.zeros(1, 8, 3, 256, 128, device=device))
        synchronize(device)
        started = time.perf_counter()
        reference = per_tracklet_memory(model, tracklets, transform, num_classes, args.workers, device)
        synchronize(device)
        report({"pipeline": "per-tracklet", "precision": "fp32", "batch_size": "1 tracklet"},
               time.perf_counter() - started)
        for precision in args.precisions.split(","):
            started = time.perf_counter()
            memory = build_clip_memory(model, tracklets, transform, num_classes, seq_len=8,
                                       batch_size=args.batch_size, workers=args.workers, device=device,
                                       precision=precision)
            synchronize(device)
            seconds = time.perf_counter() - started
            report({"pipeline": "ours", "precision": precision, "batch_size": args.batch_size,
                    "max_abs_diff_vs_per_tracklet_fp32": float(f"{(memory - reference).abs().max().item():.3g}")},
                   seconds)


if __name__ == "__main__":
    main()
