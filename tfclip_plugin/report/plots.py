"""matplotlib figures of a report: CMC curves, the 2-D feature map, training curves.

Figures are built with ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state, no display).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from ..files.atomic import atomic_write
from .events import Series

DPI = 100
_TRAIN_TAGS_NOT_LOSSES = ("Train/time", "Train/data")


def save_figure(fig: Figure, path: str) -> None:
    """Write ``fig`` to ``path`` atomically, in the format its extension names."""
    with atomic_write(path) as stream:
        fig.savefig(stream, format=path.rsplit(".", 1)[-1])


def plot_cmc_panels(panels: Mapping[str, Mapping[str, np.ndarray]], path: str, title: str = "") -> None:
    """One panel per key of ``panels``, one curve per (label, cmc (R,)) in it; ranks 1..R, in percent."""
    fig = Figure(figsize=(4.2 * len(panels), 3.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, curves) in zip(axes, panels.items()):
        for label, cmc in curves.items():
            ranks = np.arange(1, len(cmc) + 1)
            ax.plot(ranks, 100.0 * np.asarray(cmc), marker="o", markersize=2.5, linewidth=1.4,
                    label=f"{label} (R1 {100.0 * cmc[0]:.1f})")
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("rank")
        ax.set_ylabel("matching rate (%)")
        ax.set_xlim(1, max(len(c) for c in curves.values()))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path)


def identity_colours(num: int) -> np.ndarray:
    """(num, 3) RGB in [0, 1]: tab20 for up to 20 identities, evenly spaced hues beyond."""
    from matplotlib import colormaps

    if num <= 20:
        return np.asarray(colormaps["tab20"].colors)[:num]
    return colormaps["hsv"](np.linspace(0, 1, num, endpoint=False))[:, :3]


def plot_feature_maps(
    panels: Mapping[str, Tuple[np.ndarray, np.ndarray, np.ndarray]],
    identities: Sequence[int],
    path: str,
    thumbnails: Optional[Image.Image] = None,
    title: str = "",
) -> None:
    """Scatter of 2-D embeddings coloured by identity, one panel per run.

    ``panels[name] = (xy (n, 2), pids (n,), is_query (n,) bool)``; ``identities`` fixes the colour
    order (the same identity has the same colour in every panel); queries are drawn as triangles.
    ``thumbnails`` (an RGB strip, one framed frame per identity in that order) goes under the panels.
    """
    colours = identity_colours(len(identities))
    colour_of = {pid: colours[i] for i, pid in enumerate(identities)}
    rows = 2 if thumbnails is not None else 1
    heights = [4.2, 0.9] if thumbnails is not None else [4.2]
    width = max(4.6 * len(panels), 0.4 * len(identities))  # room for the thumbnails of many identities
    fig = Figure(figsize=(width, sum(heights)), dpi=DPI, layout="constrained")
    grid = fig.add_gridspec(rows, len(panels), height_ratios=heights)
    for column, (name, (xy, pids, is_query)) in enumerate(panels.items()):
        ax = fig.add_subplot(grid[0, column])
        point_colours = np.array([colour_of[int(p)] for p in pids]).reshape(-1, 3)
        for mask, marker in ((~is_query, "o"), (is_query, "^")):
            ax.scatter(xy[mask, 0], xy[mask, 1], c=point_colours[mask], marker=marker, s=18, linewidths=0)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if thumbnails is not None:
        ax = fig.add_subplot(grid[1, :])
        ax.imshow(np.asarray(thumbnails))
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path)


def _training_panels(scalars: Mapping[str, Series]) -> Dict[str, Tuple[Dict[str, Series], str, bool]]:
    """title -> (curves by label, x label, in percent) for the tags torchreid's writer and our engines use."""
    groups: Dict[str, Dict[str, Series]] = {"losses": {}, "training accuracy (%)": {}, "learning rate": {},
                                            "evaluation (%)": {}}
    for tag, series in scalars.items():
        section, _, name = tag.partition("/")
        if section == "Test":
            groups["evaluation (%)"][name] = series
        elif section == "Train" and tag == "Train/lr":
            groups["learning rate"]["lr"] = series
        elif section == "Train" and name.startswith("acc"):
            groups["training accuracy (%)"][name] = series
        elif section == "Train" and tag not in _TRAIN_TAGS_NOT_LOSSES:
            groups["losses"][name] = series
    return {
        title: (curves, "epoch" if title.startswith("evaluation") else "iteration", title.endswith("(%)"))
        for title, curves in groups.items() if curves
    }


def plot_training_curves(scalars: Mapping[str, Series], path: str, title: str = "") -> bool:
    """Losses, accuracies and learning rate per iteration, test metrics per epoch; False if there is nothing.

    Reads the writer's tags: ``Train/<loss>``, ``Train/acc*``, ``Train/lr`` (``Train/time`` and
    ``Train/data`` are left out) and ``Test/<target>/<metric>``. Fractions (all values <= 1) in the
    percent panels are drawn as percentages.
    """
    panels = _training_panels(scalars)
    if not panels:
        return False
    fig = Figure(figsize=(4.2 * len(panels), 3.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, (curves, xlabel, percent)) in zip(axes, panels.items()):
        for label, (steps, values) in curves.items():
            scale = 100.0 if percent and values.max(initial=0) <= 1.0 else 1.0
            ax.plot(steps, scale * values, marker="o" if len(steps) < 50 else None, markersize=3, linewidth=1.2,
                    label=label)
        steps = np.concatenate([s for s, _ in curves.values()])
        if steps.min() == steps.max():
            ax.set_xlim(steps.min() - 1, steps.max() + 1)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if panel_title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        else:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path)
    return True
