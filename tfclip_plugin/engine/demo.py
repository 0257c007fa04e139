"""``tfclip-reid demo`` (``make demo``): the untrained TF-CLIP, the trained one and a torchreid baseline on the
generated synthvid benchmark, under one protocol, in about two minutes on two CPU cores."""
from __future__ import annotations

import json
import os
import os.path as osp
import time
from typing import Any, Dict, Optional

import torch
from yacs.config import CfgNode as CN

from ..config import KEYS, get_default_config, is_tfclip_run, load_config_yaml, reset_to_default
from ..configs import recipe_path
from .runner import run_single

DEMO_BASELINE = {"model.name": "osnet_x0_25", "loss.name": "triplet"}


def demo_config(root: str = "reid-data", save_dir: str = "log/demo") -> CN:
    """The demo setting, read from the shipped ``configs/demo.yaml``: synthvid, a small TF-CLIP ViT from
    random weights, both phases, on CPU."""
    cfg = get_default_config()
    with open(recipe_path("demo"), encoding="utf-8") as stream:
        cfg.merge_from_other_cfg(load_config_yaml(stream))
    cfg.data.root, cfg.data.save_dir = root, save_dir
    return cfg


def _demo_variant(cfg: CN, save_dir: str, **options: Any) -> CN:
    """``cfg`` with ``options`` and ``save_dir``; a torchreid model also gets the TF-CLIP-only keys back at
    their defaults (they cannot affect it)."""
    variant = cfg.clone()
    variant.merge_from_list([item for pair in options.items() for item in pair])
    variant.data.save_dir = save_dir
    if not is_tfclip_run(variant):
        for key in KEYS:
            if key.applies_to == "tfclip":
                reset_to_default(variant, key)
    return variant


def run_demo(root: str = "reid-data", save_dir: str = "log/demo", threads: Optional[int] = None) -> Dict[str, Any]:
    """``tfclip-reid demo``: the untrained TF-CLIP, the trained one (phase 1 + phase 2) and a torchreid
    baseline trained by torchreid's video engine, all tested under the same protocol and sampling.

    ``threads``: torch intra-op threads during the demo; default ``OMP_NUM_THREADS`` when set, else 1. One
    thread is the robust choice for small models on a small CPU: on 2 cores shared with other work, two
    OpenMP threads waited on each other (a training step measured 6x slower), while on idle cores one
    thread costs about 1.3x.

    Prints a table and, as its last line, one JSON object (untrained_map, trained_map, baseline_map,
    baseline_model, seconds, ...). Returns that object.
    """
    started = time.time()
    cfg = demo_config(root, osp.join(save_dir, "tfclip"))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or int(os.environ.get("OMP_NUM_THREADS") or 1))
    try:
        runs = {
            "TF-CLIP, untrained": run_single(_demo_variant(cfg, osp.join(save_dir, "untrained"),
                                                           **{"test.evaluate": True})),
            "TF-CLIP, trained": run_single(cfg),
            f"{DEMO_BASELINE['model.name']} (torchreid video engine)": run_single(
                _demo_variant(cfg, osp.join(save_dir, "baseline"), **DEMO_BASELINE)),
        }
    finally:
        torch.set_num_threads(previous_threads)
    target = cfg.data.targets[0]
    protocol, sampling = runs["TF-CLIP, trained"]["protocol"], runs["TF-CLIP, trained"]["test_sampling"]
    print(f"\nsynthvid demo: protocol {protocol}, {sampling} test sampling")
    print(f"{'model':<40} {'mAP':>7} {'R1':>7} {'R5':>7} {'mINP':>7} {'seconds':>8}")
    for name, result in runs.items():
        metrics = result["results"][target]
        print(f"{name:<40} {metrics['mAP']:>7.1%} {metrics['cmc']['1']:>7.1%} {metrics['cmc']['5']:>7.1%} "
              f"{metrics['mINP']:>7.1%} {result['wall_seconds']['total']:>8.1f}")
    untrained, trained, baseline = (r["results"][target] for r in runs.values())
    summary = {
        "untrained_map": round(untrained["mAP"], 4),
        "trained_map": round(trained["mAP"], 4),
        "baseline_map": round(baseline["mAP"], 4),
        "untrained_rank1": round(untrained["cmc"]["1"], 4),
        "trained_rank1": round(trained["cmc"]["1"], 4),
        "baseline_rank1": round(baseline["cmc"]["1"], 4),
        "baseline_model": DEMO_BASELINE["model.name"],
        "protocol": protocol,
        "test_sampling": sampling,
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(summary))
    return summary
