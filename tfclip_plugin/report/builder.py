"""``tfclip-reid report``: figures and ``index.html`` of test runs, written into ``RUN_DIR/report/``."""
from __future__ import annotations

import glob
import os
import shutil
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from .. import evaluation
from .embedding import FeatureMap, embed_identities, sample_identities
from .events import read_scalars
from .frames import identity_strip
from .html import Section, json_block, metrics_table, render_page
from ..files.atomic import atomic_write, write_text
from ..files.results import load_results
from ..files.test_outputs import TestOutputs, find_test_outputs, load_test_outputs
from .plots import identity_colours, plot_cmc_panels, plot_feature_maps, plot_training_curves
from .ranked_figure import CORRECT_COLOUR, QUERY_COLOUR, WRONG_COLOUR, RankedCell, RankedLayout, draw_ranked_results
from .ranking import Ranking, choose_queries, rank_gallery

REPORT_DIR = "report"
REPORT_FILES = ("ranked_*.png", "cmc_*.png", "feature_map_*.png", "training_curves.png", "index.html")
CMC_MAX_RANK = 50
TABLE_RANKS = (1, 5, 10, 20)
NUM_IDENTITIES = 20


@dataclass
class RunReport:
    """One run folder being reported: its outputs per target and what was written for it."""

    path: str
    label: str
    results: Dict[str, Any]
    outputs: Dict[str, TestOutputs]
    metrics: Dict[str, Dict[str, Dict[str, Any]]] = field(default_factory=dict)  # target -> protocol -> metrics
    feature_maps: Dict[str, FeatureMap] = field(default_factory=dict)
    sections: List[Section] = field(default_factory=list)
    missing_frames: List[str] = field(default_factory=list)
    written: List[str] = field(default_factory=list)

    @property
    def report_dir(self) -> str:
        return os.path.join(self.path, REPORT_DIR)

    def save_path(self, name: str) -> str:
        path = os.path.join(self.report_dir, name)
        self.written.append(path)
        return path


def build_report(
    runs: Sequence[str], topk: int = 5, num_queries: int = 8, seed: int = 0, num_identities: int = NUM_IDENTITIES,
) -> List[str]:
    """Write the report of every run into ``<run>/report/`` and return the paths written.

    Per test dataset (``test_outputs/<target>.npz``): ``ranked_<target>.png`` (``num_queries`` rows of the
    query and its ``topk`` gallery tracklets under the run's protocol), ``cmc_<target>.png`` (ranks 1-50,
    every protocol), ``feature_map_<target>.png`` (t-SNE of ``num_identities`` identities); per run
    ``training_curves.png`` (from the tensorboard events) and ``index.html``. With several runs, each
    report also gets ``cmc_runs_<target>.png`` and ``feature_map_runs_<target>.png`` comparing them on
    the datasets they share. ``seed`` fixes the choice of queries and identities.
    """
    if not runs:
        raise ValueError("report needs at least one run folder")
    if topk < 1 or num_queries < 1 or num_identities < 1:
        raise ValueError(
            f"topk, queries and identities must be at least 1; got {topk}, {num_queries}, {num_identities}"
        )
    results = [load_results(run) for run in runs]
    reports = [
        RunReport(path=run, label=label, results=res,
                  outputs={o.target: o for o in map(load_test_outputs, find_test_outputs(run))})
        for run, label, res in zip(runs, run_labels(runs, [model_name(r) for r in results]), results)
    ]
    identities = _identities_per_target(reports, num_identities, seed)
    for report in reports:
        clear_report_dir(report.report_dir)
        for target, outputs in report.outputs.items():
            report.sections.append(_target_section(report, outputs, topk, num_queries, seed, identities[target]))
        report.sections.append(_training_section(report))
    if len(reports) > 1:
        _comparison_sections(reports, identities)
    for report in reports:
        report.sections.append(_config_section(report))
        if report.missing_frames:
            warnings.warn(
                f"{report.path}: {len(report.missing_frames)} frame file(s) not found, drawn grey "
                f"(first: '{report.missing_frames[0]}'); was the dataset moved since the test run?",
                stacklevel=2,
            )
        write_text(report.save_path("index.html"),
                   render_page(f"Report: {report.label}", _intro(report, topk, num_queries, seed), report.sections))
    return [path for report in reports for path in report.written]


def clear_report_dir(report_dir: str) -> None:
    """Create ``report_dir``, or remove the files an earlier report wrote there (other files stay)."""
    os.makedirs(report_dir, exist_ok=True)
    for pattern in REPORT_FILES:
        for path in glob.glob(os.path.join(report_dir, pattern)):
            os.remove(path)


def run_labels(runs: Sequence[str], models: Sequence[Optional[str]]) -> List[str]:
    """Short names of the runs: folder names, or paths below their common folder when names repeat,
    followed by the model name (when known and not already in the name)."""
    paths = [os.path.abspath(run) for run in runs]
    labels = [os.path.basename(p) or p for p in paths]
    if len(set(labels)) < len(labels) and len(set(paths)) == len(paths):
        common = os.path.commonpath(paths)
        labels = [os.path.relpath(p, common) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{label} [{i + 1}]" for i, label in enumerate(labels)]
    return [f"{label} ({model})" if model and model not in label else label for label, model in zip(labels, models)]


def model_name(results: Dict[str, Any]) -> Optional[str]:
    """The model of a ``results.json``: its ``model`` entry, else ``config.model.name``; None if neither."""
    if results.get("model"):
        return str(results["model"])
    config = results.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    return str(model["name"]) if isinstance(model, dict) and model.get("name") else None


def _intro(report: RunReport, topk: int, num_queries: int, seed: int) -> List[str]:
    model = model_name(report.results)
    return [
        f"Run folder: {report.path}" + (f" (model {model})" if model else ""),
        f"Test datasets: {', '.join(report.outputs)}. Generated by `tfclip-reid report` with topk {topk}, "
        f"{num_queries} queries, seed {seed}. Metrics below are recomputed from test_outputs/ "
        f"(float16 features), so they may differ from results.json in the last digit.",
    ]


def _identities_per_target(reports: Sequence[RunReport], num_identities: int, seed: int) -> Dict[str, np.ndarray]:
    """The identities of each target's feature map, drawn from the first run that has the target."""
    identities: Dict[str, np.ndarray] = {}
    for report in reports:
        for target, outputs in report.outputs.items():
            if target not in identities:
                identities[target] = sample_identities(outputs, num_identities, seed)
    return identities


def _protocol_metrics(outputs: TestOutputs, notes: List[str]) -> Dict[str, Dict[str, Any]]:
    metrics = {}
    for protocol in evaluation.PROTOCOLS:
        try:
            metrics[protocol] = evaluation.evaluate(
                outputs.query_features, outputs.gallery_features, outputs.query_pids, outputs.gallery_pids,
                outputs.query_camids, outputs.gallery_camids, protocol=protocol, max_rank=CMC_MAX_RANK,
            )
        except ValueError as exc:
            notes.append(f"protocol {protocol}: {exc}")
    return metrics


def _results_table(metrics: Dict[str, Dict[str, Any]], run_protocol: str) -> str:
    header = ["protocol"] + [f"R{r}" for r in TABLE_RANKS] + ["mAP", "mINP", "queries with a match"]
    rows, highlight = [], []
    for protocol, m in metrics.items():
        cmc = m["cmc"]
        ranks = [f"{100 * cmc[r - 1]:.1f}" if r <= len(cmc) else "-" for r in TABLE_RANKS]
        name = f"{protocol} (the run's)" if protocol == run_protocol else protocol
        rows.append([name, *ranks, f"{100 * m['mAP']:.1f}", f"{100 * m['mINP']:.1f}",
                     f"{m['num_valid_queries']} / {m['num_query']}"])
        highlight.append(protocol == run_protocol)
    return metrics_table(header, rows, highlight)


def _target_section(
    report: RunReport, outputs: TestOutputs, topk: int, num_queries: int, seed: int, identities: np.ndarray,
) -> Section:
    target = outputs.target
    section = Section(title=f"{target}: {outputs.num_query} queries, {outputs.num_gallery} gallery tracklets")
    metrics = _protocol_metrics(outputs, section.notes)
    report.metrics[target] = metrics
    if metrics:
        section.tables.append(_results_table(metrics, outputs.protocol))
    ranking = rank_gallery(outputs, outputs.protocol, topk)
    chosen = choose_queries(ranking, num_queries, seed)
    if len(chosen):
        name = f"ranked_{target}.png"
        image, missing = draw_ranked_results(
            _ranked_rows(outputs, ranking, chosen), RankedLayout(num_rows=len(chosen), topk=ranking.indices.shape[1])
        )
        with atomic_write(report.save_path(name)) as stream:
            image.save(stream, format="PNG")
        report.missing_frames += missing
        section.figures.append((name, _ranked_caption(outputs.protocol, ranking, chosen, seed)))
    else:
        section.notes.append("no query has a true match in the gallery: no ranked-results figure")
    if metrics:
        name = f"cmc_{target}.png"
        curves = {(f"{p} (run)" if p == outputs.protocol else p): m["cmc"] for p, m in metrics.items()}
        plot_cmc_panels({f"{target}: CMC": curves}, report.save_path(name), title=report.label)
        section.figures.append((name, "CMC, ranks 1-50, under each protocol (R1 in the legend)."))
    _feature_map(report, outputs, identities, seed, section)
    return section


def _ranked_rows(outputs: TestOutputs, ranking: Ranking, chosen: np.ndarray) -> List[List[RankedCell]]:
    rows = []
    for q in chosen:
        row = [RankedCell(outputs.query_frames[q], f"id {outputs.query_pids[q]} cam {outputs.query_camids[q]}",
                          QUERY_COLOUR)]
        for g, distance, match in zip(ranking.indices[q], ranking.distances[q], ranking.matches[q]):
            if g < 0:
                break
            colour = CORRECT_COLOUR if match else WRONG_COLOUR
            row.append(RankedCell(ranking.gallery.frames[g], f"{distance:.3f}  id {ranking.gallery.pids[g]}", colour))
        rows.append(row)
    return rows


def _ranked_caption(protocol: str, ranking: Ranking, chosen: np.ndarray, seed: int) -> str:
    first = ranking.first_match[chosen]
    n_miss = int((first > 0).sum())
    parts = []
    if n_miss:
        ranks = ", ".join(str(r + 1) for r in first[:n_miss])
        parts.append(f"rows 1-{n_miss}: rank-1 misses, worst first (first true match at rank {ranks})")
    if n_miss < len(chosen):
        parts.append(f"rows {n_miss + 1}-{len(chosen)}: rank-1 hits drawn with seed {seed}")
    gallery = "query + gallery" if evaluation.QUERY_IN_GALLERY[protocol] else "gallery"
    return (
        "; ".join(parts) + ". Blue: query; green: same identity; red: another identity. Under each tracklet: "
        f"squared Euclidean distance of L2-normalised features and identity; ranked against {gallery} without "
        f"same-identity-same-camera tracklets (protocol {protocol})."
    )


def _feature_map(report: RunReport, outputs: TestOutputs, identities: np.ndarray, seed: int, section: Section) -> None:
    present = identities[np.isin(identities, np.concatenate([outputs.query_pids, outputs.gallery_pids]))]
    try:
        feature_map = embed_identities(outputs, present, seed)
    except ValueError as exc:
        section.notes.append(f"no feature map: {exc}")
        return
    report.feature_maps[outputs.target] = feature_map
    name = f"feature_map_{outputs.target}.png"
    strip = _identity_thumbnails(report, feature_map, identities)
    plot_feature_maps({outputs.target: (feature_map.xy, feature_map.pids, feature_map.is_query)}, identities,
                      report.save_path(name), thumbnails=strip, title=report.label)
    section.figures.append((
        name,
        f"t-SNE of the test features of {len(present)} identities drawn with seed {seed} (circles: gallery, "
        "triangles: query); under it, one frame of each identity in its colour.",
    ))


def _identity_thumbnails(report: RunReport, feature_map: FeatureMap, identities: np.ndarray) -> Image.Image:
    frames, colours = [], []
    for pid, colour in zip(identities, identity_colours(len(identities))):
        rows = np.flatnonzero(feature_map.pids == pid)
        if len(rows):
            tracklet = feature_map.frames[rows[0]]
            frames.append(tracklet[len(tracklet) // 2])
            colours.append(tuple(int(round(255 * c)) for c in colour))
    strip, missing = identity_strip(frames, colours)
    report.missing_frames += missing
    return strip


def _training_section(report: RunReport) -> Section:
    section = Section(title="Training curves")
    name = "training_curves.png"
    path = os.path.join(report.report_dir, name)
    if plot_training_curves(read_scalars(report.path), path, title=report.label):
        report.written.append(path)
        section.figures.append((name, "Losses and learning rate per iteration, test metrics per evaluation."))
    else:
        section.notes.append("no tensorboard scalars in the run folder (a test-only run writes none)")
    return section


def _comparison_sections(reports: Sequence[RunReport], identities: Dict[str, np.ndarray]) -> None:
    """CMC per protocol and feature maps of all runs, for every target that two or more runs share."""
    first = reports[0]
    targets = [t for t in identities if sum(t in r.metrics for r in reports) > 1]
    sections = []
    for target in targets:
        section = Section(title=f"Runs compared on {target}")
        having = [r for r in reports if target in r.metrics]
        panels = {
            protocol: {r.label: r.metrics[target][protocol]["cmc"] for r in having if protocol in r.metrics[target]}
            for protocol in evaluation.PROTOCOLS
        }
        cmc_panels = {f"{target}, protocol {p}": curves for p, curves in panels.items() if len(curves) > 1}
        if cmc_panels:
            name = f"cmc_runs_{target}.png"
            plot_cmc_panels(cmc_panels, first.save_path(name))
            section.figures.append((name, f"CMC of {', '.join(r.label for r in having)}, one panel per protocol."))
        maps = {r.label: r.feature_maps[target] for r in having if target in r.feature_maps}
        if len(maps) > 1:
            name = f"feature_map_runs_{target}.png"
            plot_feature_maps({label: (m.xy, m.pids, m.is_query) for label, m in maps.items()}, identities[target],
                              first.save_path(name))
            section.figures.append((name, "t-SNE of the same identities in each run (same colours)."))
        sections.append(section)
    for report in reports[1:]:
        for section in sections:
            for name, _ in section.figures:
                shutil.copyfile(os.path.join(first.report_dir, name), report.save_path(name))
    for report in reports:
        report.sections += sections
    if not targets:
        note = Section(title="Runs compared", notes=["the runs share no test dataset: no comparison"])
        for report in reports:
            report.sections.append(note)


def _config_section(report: RunReport) -> Section:
    section = Section(title="Configuration and results.json")
    if not report.results:
        section.notes.append("the run folder has no results.json")
        return section
    config = report.results.get("config")
    if isinstance(config, dict):
        section.tables.append(json_block("Configuration (results.json: config)", config))
    rest = {k: v for k, v in report.results.items() if k != "config"}
    if rest:
        section.tables.append(json_block("Results (results.json without config)", rest))
    return section
