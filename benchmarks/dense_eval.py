"""Dense evaluation on a generated synthvid test set: frames per second from JPEG files to mAP.

Pipelines, each timed end to end over the query + gallery tracklets (reading and decoding frames, the
forward passes, ranking):

- ``ours``: the plugin's dense evaluation (``DenseClipDataset``: every frame in 8-frame chunks, chunks of many
  tracklets batched ``--batch-size`` clips per forward, ``--workers`` loader processes, pinned memory on a
  GPU; ``dense_tracklet_features`` under ``tfclip.precision``; vectorised ``evaluation.evaluate``), once with
  TF-CLIP and once with the torchreid model;
- ``torchreid-engine``: torchreid's own ``VideoSoftmaxEngine._evaluate`` with its own sampling of all frames of
  a tracklet (one tracklet per forward, batch size 1, as its video engines require for variable lengths),
  per-image test transforms, frame features average-pooled, ``evaluate_rank``; with a torchreid model of about
  TF-CLIP's cost (``--torchreid-model``, default resnext101_32x8d: 10.7 GMACs per 256x128 frame against
  TF-CLIP's 11.3).

``frames_per_s`` counts each stored frame once; ``computed_frames_per_s`` counts what the model ran on: the dense
protocol pads a tracklet's last chunk to 8 frames by repeating frames (a 9-frame tracklet costs 16), torchreid's
all-frames clip does not.

Every line carries the mAP (tfclip protocol for ours, torchreid's for its engine) so that the fp32 and bf16
rankings of one model can be compared (``map_delta_vs_fp32``, in points). Models have random weights unless
``--clip-weights`` gives CLIP weights for TF-CLIP.

    python benchmarks/dense_eval.py --tiny                  # a quick run of every pipeline
    python benchmarks/dense_eval.py --test-ids 12 --precisions fp32,bf16 --skip-torchreid
    python benchmarks/dense_eval.py --device cuda --test-ids 100 --max-frames 120 --batch-size 64 --workers 8
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import redirect_stdout
from types import SimpleNamespace
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from common import add_common_arguments, build_ours, emit, machine, setup, synchronize
from tfclip_plugin import host
from tfclip_plugin.data import DenseClipDataset, generate_synthvid
from tfclip_plugin.data.datasets.synthvid import SynthVid
from tfclip_plugin.data.transforms import build_sequence_transforms
from tfclip_plugin.engine.features import dense_tracklet_features
from tfclip_plugin.evaluation import evaluate

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def frame_count(tracklets: List[tuple]) -> int:
    return sum(len(t[0]) for t in tracklets)


def our_pipeline(encode: Callable, tracklets: Dict[str, List[tuple]], args, device: torch.device,
                 precision: str) -> Dict:
    """Dense features of query and gallery, then the tfclip-protocol ranking; seconds and mAP."""
    transform = build_sequence_transforms(256, 128, [], MEAN, STD)[1]
    started = time.perf_counter()
    features, computed = {}, 0
    with torch.no_grad():
        for split in ("query", "gallery"):
            dataset = DenseClipDataset(tracklets[split], transform, seq_len=8)
            computed += dataset.chunks.size
            features[split] = dense_tracklet_features(encode, dataset, args.batch_size, args.workers, device,
                                                      precision, desc=split)
    synchronize(device)
    extracted = time.perf_counter()
    q, g = tracklets["query"], tracklets["gallery"]
    result = evaluate(F.normalize(features["query"], dim=1), F.normalize(features["gallery"], dim=1),
                      [t[1] for t in q], [t[1] for t in g], [t[2] for t in q], [t[2] for t in g], protocol="tfclip")
    ended = time.perf_counter()
    return {"computed_frames": int(computed), "extract_s": round(extracted - started, 3),
            "rank_s": round(ended - extracted, 4),
            "total_s": round(ended - started, 3), "mAP": round(100 * result["mAP"], 3),
            "rank1": round(100 * float(result["cmc"][0]), 3)}


def torchreid_engine(model: torch.nn.Module, root: str, args, device: torch.device, num_train_pids: int) -> Dict:
    """torchreid's VideoSoftmaxEngine._evaluate over its own all-frames loaders (batch size 1)."""
    with redirect_stdout(sys.stderr):  # torchreid prints the transforms; stdout carries JSON lines only
        transform = host.data.transforms.build_transforms(256, 128, transforms=None, norm_mean=MEAN, norm_std=STD)[1]
    loaders = {}
    for mode in ("query", "gallery"):
        dataset = SynthVid(root=root, mode=mode, sample_method="all", seq_len=8, transform=transform, verbose=False)
        loaders[mode] = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=args.workers,
                                   pin_memory=device.type == "cuda")
    manager = SimpleNamespace(train_loader=None, test_loader={}, num_train_pids=num_train_pids)
    engine = host.VideoSoftmaxEngine(manager, model, optimizer=None, use_gpu=device.type == "cuda")
    started = time.perf_counter()
    with torch.no_grad(), redirect_stdout(sys.stderr):
        rank1, mean_ap = engine._evaluate(dataset_name="synthvid", query_loader=loaders["query"],
                                          gallery_loader=loaders["gallery"], dist_metric="euclidean",
                                          normalize_feature=True, visrank=False, visrank_topk=10, save_dir="",
                                          use_metric_cuhk03=False, ranks=[1], rerank=False)
    return {"computed_frames": frame_count(loaders["query"].dataset.query + loaders["query"].dataset.gallery),
            "total_s": round(time.perf_counter() - started, 3), "mAP": round(100 * float(mean_ap), 3),
            "rank1": round(100 * float(rank1), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--root", default="", help="where to generate synthvid (default: a temporary folder)")
    parser.add_argument("--test-ids", type=int, default=10, help="synthvid test identities (2 cameras, up to 6 "
                        "tracklets each: torchreid's evaluate_rank needs 50+ gallery tracklets per query)")
    parser.add_argument("--max-frames", type=int, default=12, help="longest tracklet (frames)")
    parser.add_argument("--frame-size", default="128x64", help="stored frame size HxW (inputs are resized to 256x128)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per forward in our pipeline")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="loader processes (default: half the cores; more on a 2-core CPU slows the forward)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--torchreid-model", default="resnext101_32x8d")
    parser.add_argument("--skip-torchreid", action="store_true", help="only TF-CLIP through our pipeline")
    parser.add_argument("--clip-weights", default="", help="CLIP ViT-B/16 weights for TF-CLIP (tfclip.clip_weights)")
    args = parser.parse_args()
    device = setup(args)
    emit({"benchmark": "dense_eval", "machine": machine(device), "args": vars(args)})

    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or scratch
        height, width = (int(v) for v in args.frame_size.split("x"))
        generate_synthvid(root, num_train_ids=2, num_test_ids=args.test_ids, num_cameras=2, min_cameras_per_id=2,
                          max_cameras_per_id=2, max_tracklets_per_camera=6, min_frames=8,
                          max_frames=args.max_frames, height=height, width=width, num_junk=0, num_distractors=2)
        data = SynthVid(root=root, transform=build_sequence_transforms(256, 128, [], MEAN, STD)[1], verbose=False)
        tracklets = {"query": data.query, "gallery": data.gallery}
        frames = frame_count(data.query) + frame_count(data.gallery)
        base = {"benchmark": "dense_eval", "device": device.type, "tracklets": len(data.query) + len(data.gallery),
                "frames": frames}

        def report(record: Dict) -> Dict:
            out = dict(base, **record)
            out["frames_per_s"] = round(frames / out["total_s"], 2)
            out["computed_frames_per_s"] = round(out["computed_frames"] / out["total_s"], 2)
            emit(out)
            return out

        tfclip = build_ours(tiny=args.tiny).eval()
        if args.clip_weights:
            from tfclip_plugin.models.clip_weights import load_clip_weights
            load_clip_weights(tfclip.backbone, args.clip_weights)
        tfclip.to(device)
        fp32_map = None
        for precision in args.precisions.split(","):
            result = our_pipeline(lambda clips, camids: tfclip(clips, camids), tracklets, args, device, precision)
            record = report({"pipeline": "ours", "model": "tiny" if args.tiny else "TF-CLIP ViT-B/16",
                             "precision": precision, "batch_size": args.batch_size, "workers": args.workers,
                             **result})
            if precision == "fp32":
                fp32_map = record["mAP"]
            elif fp32_map is not None:
                emit({"benchmark": "dense_eval_ranking", "model": record["model"], "precision": precision,
                      "mAP_fp32": fp32_map, "mAP": record["mAP"],
                      "map_delta_vs_fp32": round(record["mAP"] - fp32_map, 3)})
        if args.skip_torchreid:
            return
        name = "osnet_x0_25" if args.tiny else args.torchreid_model
        baseline = host.models.build_model(name, data.num_train_pids, loss="softmax", pretrained=False)
        baseline.to(device).eval()

        def pooled(clips: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
            return baseline(clips.flatten(0, 1)).unflatten(0, clips.shape[:2]).mean(dim=1)

        report({"pipeline": "ours", "model": name, "precision": "fp32", "batch_size": args.batch_size,
                "workers": args.workers, **our_pipeline(pooled, tracklets, args, device, "fp32")})
        report({"pipeline": "torchreid-engine", "model": name, "precision": "fp32", "batch_size": 1,
                "workers": args.workers, **torchreid_engine(baseline, root, args, device, data.num_train_pids)})


if __name__ == "__main__":
    main()
