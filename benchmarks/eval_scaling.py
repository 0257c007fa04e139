"""Ranking time against gallery size, on synthetic tracklet features (no model, no images).

For each gallery size: ``--queries`` query features and G gallery features (2048-d, L2-normalised, drawn
around one centre per identity, about 5 gallery tracklets per identity, 6 cameras). Timed from features to
CMC/mAP, with the ``torchreid`` protocol (query against gallery) so that both sides rank the same matrix:

- ``ours``: ``tfclip_plugin.evaluation.evaluate`` (torchreid's distance, then CMC/mAP/mINP vectorised over
  blocks of queries);
- ``torchreid``: ``compute_distance_matrix`` + ``evaluate_rank`` as torchreid's engine calls it (its Python
  path: the PyPI package ships no Cython extension).

Both must give the same mAP (``same_map``). MARS has 1,980 queries and a 12,180-tracklet protocol gallery.

    python benchmarks/eval_scaling.py                                 # 1k, 3k, 10k
    python benchmarks/eval_scaling.py --galleries 1000,3000,10000,30000,100000
"""
from __future__ import annotations

import argparse
import time
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

from common import emit, machine
from tfclip_plugin import host
from tfclip_plugin.evaluation import evaluate

DIM = 2048
TRACKLETS_PER_ID = 5
CAMERAS = 6


def synthetic_features(queries: int, gallery: int, seed: int = 0):
    """(qf, gf, q_pids, g_pids, q_camids, g_camids): identities as noisy clusters."""
    rng = np.random.default_rng(seed)
    ids = max(gallery // TRACKLETS_PER_ID, 1)
    centres = rng.standard_normal((ids, DIM), dtype=np.float32)
    g_pids = rng.integers(0, ids, gallery)
    q_pids = rng.choice(np.unique(g_pids), queries)
    g_camids, q_camids = rng.integers(0, CAMERAS, gallery), rng.integers(0, CAMERAS, queries)

    def around(pids: np.ndarray) -> torch.Tensor:
        noise = rng.standard_normal((len(pids), DIM), dtype=np.float32)
        return F.normalize(torch.from_numpy(centres[pids] + 4.0 * noise), dim=1)

    return around(q_pids), around(g_pids), q_pids, g_pids, q_camids, g_camids


def time_ours(qf, gf, q_pids, g_pids, q_camids, g_camids) -> Dict:
    started = time.perf_counter()
    result = evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, protocol="torchreid")
    return {"seconds": round(time.perf_counter() - started, 3), "mAP": float(result["mAP"])}


def time_torchreid(qf, gf, q_pids, g_pids, q_camids, g_camids) -> Dict:
    started = time.perf_counter()
    distmat = host.compute_distance_matrix(qf, gf, "euclidean").numpy()
    _, mean_ap = host.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50)
    return {"seconds": round(time.perf_counter() - started, 3), "mAP": float(mean_ap)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--galleries", default="1000,3000,10000", help="comma list of gallery sizes")
    parser.add_argument("--skip-torchreid-above", type=int, default=100000,
                        help="gallery size above which torchreid's evaluation is not run")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    emit({"benchmark": "eval_scaling", "machine": machine(torch.device("cpu")), "args": vars(args)})
    for size in (int(g) for g in args.galleries.split(",")):
        data = synthetic_features(args.queries, size)
        record = {"benchmark": "eval_scaling", "queries": args.queries, "gallery": size}
        ours = time_ours(*data)
        record.update(ours_s=ours["seconds"], mAP=round(100 * ours["mAP"], 3))
        if size <= args.skip_torchreid_above:
            theirs = time_torchreid(*data)
            record.update(torchreid_s=theirs["seconds"], speedup=round(theirs["seconds"] / ours["seconds"], 2),
                          same_map=abs(theirs["mAP"] - ours["mAP"]) < 1e-6)
        emit(record)


if __name__ == "__main__":
    main()
