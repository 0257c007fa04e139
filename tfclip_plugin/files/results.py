"""``results.json``: what a train/test run reports, written by the runner and read by the report.

Fields of a single run: ``model``, ``sources``, ``targets``, ``data_type``, ``protocol``, ``test_sampling``,
``model_selection``, ``best_epoch``, ``epochs``, ``checkpoint``, ``results`` ({target: :func:`target_summary`}),
``wall_seconds`` ({phase1, train, test, total}), ``versions``, ``config``. A run over several splits
(``tfclip.all_splits``) has ``splits``, ``std``, ``summary`` ({target: {metric: {mean, std, per_split}}},
:func:`aggregate_splits`) and ``split_dirs`` instead of ``results``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Sequence

import numpy as np

from .atomic import write_text

RESULTS_FILE = "results.json"


def results_path(run_dir: str) -> str:
    """``<run_dir>/results.json``."""
    return os.path.join(run_dir, RESULTS_FILE)


def target_summary(result: Dict[str, Any], ranks: Sequence[int]) -> Dict[str, Any]:
    """The JSON form of one target's metrics (``result`` from ``evaluation.evaluate_distmat`` plus the engine's
    ``test_sampling``, ``epoch`` and ``rerank``); CMC at ``ranks`` keyed by the rank as a string."""
    cmc = result["cmc"]
    return {
        "protocol": result["protocol"],
        "test_sampling": result["test_sampling"],
        "cmc": {str(r): float(cmc[r - 1]) for r in ranks if r <= len(cmc)},
        "mAP": result["mAP"],
        "mINP": result["mINP"],
        "num_query": result["num_query"],
        "num_gallery": result["num_gallery"],
        "num_valid_queries": result["num_valid_queries"],
        "epoch": result["epoch"],
        "rerank": result["rerank"],
    }


def aggregate_splits(per_split: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean and sample standard deviation (ddof=1) over splits of every metric of every target."""
    summary = {}
    for target in per_split[0]["results"]:
        rows = [run["results"][target] for run in per_split]
        metrics = {"mAP": [r["mAP"] for r in rows], "mINP": [r["mINP"] for r in rows]}
        for rank in rows[0]["cmc"]:
            metrics[f"rank{rank}"] = [r["cmc"][rank] for r in rows]
        summary[target] = {
            name: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                   "per_split": [float(x) for x in v]}
            for name, v in metrics.items()
        }
    return summary


def write_results(run_dir: str, results: Dict[str, Any]) -> str:
    """Write ``results`` to ``<run_dir>/results.json`` atomically; returns the path."""
    return write_text(results_path(run_dir), json.dumps(results, indent=2))


def load_results(run_dir: str) -> Dict[str, Any]:
    """``results.json`` of a run as a dict (empty when the run has none); errors name the file."""
    return read_json_object(results_path(run_dir))


def read_json_object(path: str) -> Dict[str, Any]:
    """The JSON object in ``path`` (empty when there is no such file); ValueError naming the file when it holds
    invalid JSON or another JSON value."""
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(results, dict):
        raise ValueError(f"{path}: expected a JSON object; got {type(results).__name__}")
    return results
