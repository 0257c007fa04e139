"""``tfclip-reid paper list | run | compare``: the supplement's rows as configs, models, runs and a comparison.

- :func:`row_config`: the row's release recipe, then its options, then the caller's overrides.
- :func:`row_complexity`: our parameter count and GMACs per frame of the row's model, built at full size (or
  at the size the overrides say) for the dataset's class and camera counts; and the count the paper's
  convention gives (:data:`~.tables.PARAMS_RULES`).
- :func:`run_row`: trains and tests a row into ``<log_dir>/table<T>/<row>_<dataset>/``.
- :func:`compare`: the paper's numbers beside the ``results.json`` of every row that has one.
"""
from __future__ import annotations

import functools
import json
import math
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from yacs.config import CfgNode as CN

from ..cli import ConfigError, check_names, merge_config_file, merge_options
from ..config import get_default_config, model_options
from ..files.atomic import write_text
from ..files.results import load_results
from ..models import ModelOptions, build_tfclip, model_complexity
from ..models.temporal import MAX_FRAMES, TemporalClsTransformer, TemporalConv1d
from .tables import DATASET_SHAPES, ROWS, PaperRow, equivalent_rows, find_row

DEFAULT_LOG_DIR = os.path.join("log", "paper")
ROW_RECORD = "paper_row.json"
METRICS = ("mAP", "rank1", "rank5")


class PaperError(ValueError):
    """A row that cannot run here, or a ``paper`` command used wrongly."""


def row_config(row: PaperRow, overrides: Sequence[str] = ()) -> CN:
    """The row's config: defaults <- ``row.recipe`` <- ``row.options`` <- ``overrides`` (``ConfigError`` naming the
    key that does not fit)."""
    cfg = get_default_config()
    merge_config_file(cfg, row.recipe)
    merge_options(cfg, list(row.options))
    merge_options(cfg, list(overrides))
    return cfg


def run_dir(row: PaperRow, log_dir: str = DEFAULT_LOG_DIR) -> str:
    """``<log_dir>/table<T>/<row>_<dataset>``."""
    return os.path.join(log_dir, f"table{row.table}", row.key)


# ------------------------------------------------------------------------------------------------ complexity
@functools.lru_cache(maxsize=None)
def _complexity(name: str, options: ModelOptions, num_classes: int, num_cameras: int, height: int, width: int,
                seq_len: int) -> Tuple[Dict[str, Any], Dict[str, int]]:
    model = build_tfclip(name, num_classes, num_cameras, pretrained=False, height=height, width=width,
                         **options.as_dict())
    report = model_complexity(model, height=height, width=width)
    embed, token = model.backbone.embed_dim, model.backbone.token_dim
    extra = {
        "model": 0,
        # classifier_proj_temp2 always; with 'tap' also the two TMD BNNecks and classifier_proj_temp
        "reference_heads": token * num_classes + (0 if model.temporal is not None else 4 * token + token * num_classes),
        "reference_position_tables": (MAX_FRAMES * embed if isinstance(model.temporal, TemporalConv1d)
                                      else seq_len * embed if isinstance(model.temporal, TemporalClsTransformer)
                                      else 0),
    }
    return report, extra


def matches_printed(count: int, printed_m: float) -> bool:
    """True when ``count`` parameters print as ``printed_m`` millions with 2 decimals, rounded or truncated
    (the paper does both: 104,255,744 -> 104.26, 100,515,072 -> 100.51)."""
    hundredths = int(round(printed_m * 100))
    return hundredths in (int(math.floor(count / 1e4 + 0.5)), count // 10_000)


def row_complexity(row: PaperRow, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """``ours`` of a row: {'params', 'params_m', 'params_paper_convention', 'params_match_paper',
    'gmacs_per_frame', 'temporal_gmacs_per_frame', 'ssp_gmacs_per_clip'}, or {'unavailable': reason} when the
    installation lacks what the row needs, or {'error': message} when its config or model cannot be built."""
    missing = row.missing_requirements()
    if missing:
        return {"unavailable": "needs " + "; ".join(req.description for req in missing)}
    try:
        cfg = row_config(row, overrides)
        num_classes, num_cameras = DATASET_SHAPES[row.dataset]
        report, extra = _complexity(cfg.model.name, model_options(cfg), num_classes, num_cameras,
                                    int(cfg.data.height), int(cfg.data.width), int(cfg.video.seq_len))
    except (ConfigError, ValueError, TypeError) as exc:
        return {"error": str(exc)}
    paper_count = report["total"] + extra[row.params_rule] if row.params_rule in extra else None
    printed = row.paper.get("params_m")
    return {
        "params": report["total"],
        "params_m": round(report["total"] / 1e6, 2),
        "params_paper_convention": paper_count,
        "params_match_paper": (matches_printed(paper_count, printed)
                               if paper_count is not None and printed is not None else None),
        "gmacs_per_frame": report["gmacs_per_frame"],
        "temporal_gmacs_per_frame": report["temporal_gmacs_per_frame"],
        "ssp_gmacs_per_clip": report["ssp_gmacs_per_clip"],
    }


def row_entry(row: PaperRow, compute: bool = True, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The JSON object ``paper list`` prints for a row."""
    entry: Dict[str, Any] = {
        "table": row.table, "row": row.row, "dataset": row.dataset, "recipe": row.recipe,
        "options": list(row.options), "requires": list(row.requires),
        "available": not row.missing_requirements(), "definition": row.definition, "paper": dict(row.paper),
        "params_rule": row.params_rule, "params_note": row.params_note,
        "same_as": [f"{r.table}/{r.row}" for r in equivalent_rows(row)],
    }
    if compute:
        entry["ours"] = row_complexity(row, overrides)
    return entry


def list_rows(table: str = "", compute: bool = True, overrides: Sequence[str] = ()) -> Iterator[Dict[str, Any]]:
    """:func:`row_entry` of every row (of ``table`` only, when given), in the supplement's order."""
    for row in ROWS:
        if not table or row.table == table:
            yield row_entry(row, compute, overrides)


# ------------------------------------------------------------------------------------------------------ run
def run_row(table: str, row_name: str, root: str, dataset: str = "", overrides: Sequence[str] = (),
            log_dir: str = DEFAULT_LOG_DIR) -> Dict[str, Any]:
    """Train and test one row (recipe, then the row's options, then ``overrides``) into :func:`run_dir`.
    Fails before building anything when the row needs what this installation lacks. Returns results.json's
    dict."""
    try:
        row = find_row(table, row_name, dataset)
    except KeyError as exc:
        raise PaperError(exc.args[0]) from None
    missing = row.missing_requirements()
    if missing:
        raise PaperError(f"table {row.table} row {row.row} ({row.dataset}) needs "
                         f"{'; '.join(req.description for req in missing)}, which this installation does not have; "
                         f"its options: {' '.join(row.options) or '(the recipe as is)'}, recipe {row.recipe}")
    if "data.save_dir" in list(overrides)[0::2]:
        raise PaperError(f"paper run writes into {run_dir(row, log_dir)}; choose the parent folder with --log-dir, "
                         "not data.save_dir")
    import torch

    cfg = row_config(row, overrides)
    cfg.use_gpu = torch.cuda.is_available()
    cfg.data.root = root
    cfg.data.save_dir = run_dir(row, log_dir)
    check_names(cfg)
    record = {"table": row.table, "row": row.row, "dataset": row.dataset, "recipe": row.recipe,
              "options": list(row.options), "overrides": list(overrides), "paper": dict(row.paper)}
    write_text(os.path.join(cfg.data.save_dir, ROW_RECORD), json.dumps(record, indent=2))
    from ..engine.runner import run_experiment

    return run_experiment(cfg)


# -------------------------------------------------------------------------------------------------- compare
def run_metrics(results: Dict[str, Any], target: str) -> Optional[Dict[str, float]]:
    """mAP, rank1, rank5 in percent of ``target`` in a results.json dict (the split mean for
    ``tfclip.all_splits`` runs); None when the target was not tested."""
    if "summary" in results:
        summary = results["summary"].get(target)
        if summary is None:
            return None
        values = {name: summary.get(name, {}).get("mean") for name in METRICS}
    else:
        result = (results.get("results") or {}).get(target)
        if result is None:
            return None
        values = {"mAP": result.get("mAP"), "rank1": result["cmc"].get("1"), "rank5": result["cmc"].get("5")}
    return {name: round(100 * value, 2) for name, value in values.items() if value is not None}


def compare_entry(row: PaperRow, log_dir: str) -> Dict[str, Any]:
    """One row of :func:`compare`: the paper's numbers, ours (or None) and a status. A row not run itself takes
    the run of an equivalent row (:func:`~.tables.equivalent_rows`), and its status says which."""
    entry: Dict[str, Any] = {"table": row.table, "row": row.row, "dataset": row.dataset,
                             "paper": {k: v for k, v in row.paper.items() if k in METRICS}, "ours": None}
    notes = []
    for source in [row] + equivalent_rows(row):
        folder = run_dir(source, log_dir)
        results = load_results(folder)
        if results:
            if source is not row:
                notes.append(f"the run of table {source.table} {source.row}")
            break
    entry["run_dir"] = folder if results else run_dir(row, log_dir)
    if not results:
        entry["status"] = "not run"
        return entry
    targets = list(results.get("targets") or [])
    target = row.dataset if row.dataset in targets else (targets[0] if targets else row.dataset)
    entry["ours"] = run_metrics(results, target)
    notes += [] if target == row.dataset else [f"tested on {target}, not {row.dataset}"]
    record_path = os.path.join(folder, ROW_RECORD)
    if os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as f:
            overrides = json.load(f).get("overrides") or []
        if overrides:
            notes.append("overrides: " + " ".join(overrides))
    entry["status"] = "; ".join(["run"] + notes)
    return entry


def _cell(numbers: Optional[Dict[str, float]], name: str) -> str:
    value = (numbers or {}).get(name)
    return f"{value:.1f}" if value is not None else "-"


def compare(log_dir: str = DEFAULT_LOG_DIR) -> Tuple[str, List[Dict[str, Any]]]:
    """(Markdown table, JSON objects), one row per table row and dataset, in the supplement's order."""
    entries = [compare_entry(row, log_dir) for row in ROWS]
    lines = ["| table | row | dataset | mAP paper | mAP ours | R1 paper | R1 ours | R5 paper | R5 ours | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        cells = [e["table"], e["row"], e["dataset"]]
        for name in METRICS:
            cells += [_cell(e["paper"], name), _cell(e["ours"], name)]
        lines.append("| " + " | ".join(cells + [e["status"]]) + " |")
    return "\n".join(lines), entries
