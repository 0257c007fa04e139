"""Checks that would otherwise fail after training, in evaluation or when a checkpoint is written, run before it.

- :func:`camera_ids` / :func:`sie_table_size`: the camera ids of every split of the training and test data;
  the SIE table of a ``tfclip_*`` model covers all of them (``engine.build.build_model``), and the cameras that
  only the test data has are named in one warning (their rows keep their initial values).
- :func:`preflight` (called by the runner once the model is built and its weights loaded): ``data.save_dir``
  writable with room for a checkpoint, the SIE table against the test cameras (a loaded or explicitly sized
  table can be too small), ``test.ranks`` against the galleries and the 50-rank CMC, a matchable query in every
  target, ``test.dist_metric`` and ``test.batch_size``, a config that checkpoints and ``results.json`` can
  store, a writable ``tfclip.memory_cache``, and at least one training batch. All problems are reported at once.
- :func:`preflight_splits` (``tfclip.all_splits``): every split of every dataset parses, before split 0 trains.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from typing import Dict, Iterable, List, Sequence, Set, Tuple

import torch
from yacs.config import CfgNode as CN

from .. import host
from ..config import activated_config
from ..evaluation import QUERY_IN_GALLERY, resolve_protocol
from ..files.checkpoint_file import CHECKPOINT_DIR, tensor_bytes

MAX_CMC_RANK = 50  # evaluation.evaluate_distmat's CMC length
DIST_METRICS = ("euclidean", "cosine")


class PreflightError(ValueError):
    """A run that would fail in evaluation or when writing its outputs; the message lists every problem."""


# ----------------------------------------------------------------------------------------------- cameras
def camera_ids(datamanager) -> Dict[str, Set[int]]:
    """{'train': ids, '<target> query': ids, '<target> gallery': ids} of a torchreid data manager."""
    ids = {"train": {int(item[2]) for item in datamanager.train_loader.dataset.train}}
    for name, splits in datamanager.test_dataset.items():
        for split in ("query", "gallery"):
            ids[f"{name} {split}"] = {int(item[2]) for item in splits[split]}
    return ids


def sie_table_size(datamanager, warn: bool = True) -> int:
    """Rows the SIE table needs: 1 + the largest camera id of any split. With ``warn``, one warning names the
    test cameras that the training split lacks (their rows are never trained)."""
    ids = camera_ids(datamanager)
    every = set().union(*ids.values())
    unseen = sorted(every - ids["train"])
    if warn and unseen:
        where = sorted(split for split, split_ids in ids.items() if split_ids & set(unseen))
        warnings.warn(f"camera id{'s' if len(unseen) > 1 else ''} {', '.join(map(str, unseen))} of "
                      f"{', '.join(where)} {'are' if len(unseen) > 1 else 'is'} not in the training split: "
                      f"the SIE table has {max(every) + 1} rows and these keep their initial values "
                      "(set tfclip.num_cameras or tfclip.sie False to change that)", stacklevel=2)
    return max(every) + 1 if every else 1


def _check_cameras(cfg: CN, datamanager, model) -> List[str]:
    table = getattr(model, "cv_embed", None)
    if table is None:
        return []
    needed = set().union(*(ids for split, ids in camera_ids(datamanager).items()
                           if split != "train" or not cfg.test.evaluate))
    outside = sorted(i for i in needed if i < 0 or i >= table.shape[0])
    if not outside:
        return []
    origin = (f"loaded from {cfg.model.load_weights}" if cfg.model.load_weights
              else f"tfclip.num_cameras {cfg.tfclip.num_cameras}" if cfg.tfclip.num_cameras else "the model's")
    return [f"camera ids {', '.join(map(str, outside))} of the data are outside the SIE table of {table.shape[0]} "
            f"rows ({origin}; ids 0..{table.shape[0] - 1}): set tfclip.num_cameras to at least {max(outside) + 1} "
            "(and train with it), or tfclip.sie False"]


# ------------------------------------------------------------------------------------------- evaluation
def _protocol(cfg: CN) -> str:
    """The run's protocol, '' resolved to the data type's standard (an unknown one is reported by the settings
    check)."""
    try:
        return resolve_protocol(cfg.tfclip.protocol, cfg.data.type)
    except ValueError:
        return cfg.tfclip.protocol


def _protocol_splits(cfg: CN, datamanager) -> Iterable[Tuple[str, Sequence[tuple], List[tuple]]]:
    with_query = QUERY_IN_GALLERY.get(_protocol(cfg), True)
    for name, splits in datamanager.test_dataset.items():
        query = list(splits["query"])
        yield name, query, (query if with_query else []) + list(splits["gallery"])


def _check_ranks(cfg: CN, datamanager) -> List[str]:
    ranks = list(cfg.test.ranks)
    problems = []
    if not ranks or any(not isinstance(r, int) or r < 1 for r in ranks):
        return [f"test.ranks must be positive integers; got {ranks}"]
    for name, _, gallery in _protocol_splits(cfg, datamanager):
        longest = min(MAX_CMC_RANK, len(gallery))
        too_large = [r for r in ranks if r > longest]
        if too_large:
            problems.append(f"test.ranks {too_large} exceed the CMC of {name} ({longest} ranks: {len(gallery)} gallery "
                            f"tracklets under protocol {_protocol(cfg)}, at most {MAX_CMC_RANK}); results.json "
                            "would lack them")
    return problems


def _check_matches(cfg: CN, datamanager) -> List[str]:
    problems = []
    for name, query, gallery in _protocol_splits(cfg, datamanager):
        cameras: Dict[int, Set[int]] = {}
        for item in gallery:
            cameras.setdefault(int(item[1]), set()).add(int(item[2]))
        if not any(cameras.get(int(q[1]), set()) - {int(q[2])} for q in query):
            problems.append(f"no query of {name} has a true match in its gallery (same identity, another camera; "
                            f"{len(query)} queries, {len(gallery)} gallery tracklets under protocol "
                            f"{_protocol(cfg)}): evaluation would stop")
    return problems


def _check_settings(cfg: CN) -> List[str]:
    problems = []
    if cfg.test.dist_metric not in DIST_METRICS:
        problems.append(f"test.dist_metric must be one of {', '.join(DIST_METRICS)}; got {cfg.test.dist_metric!r}")
    if int(cfg.test.batch_size) < 1:
        problems.append(f"test.batch_size must be at least 1 (clips per forward in evaluation); "
                        f"got {cfg.test.batch_size}")
    try:
        resolve_protocol(cfg.tfclip.protocol, cfg.data.type)
    except ValueError as exc:
        problems.append(str(exc))
    try:
        cfg.dump()
        json.dumps(cfg)
    except (TypeError, ValueError) as exc:
        problems.append(f"the config cannot be stored in checkpoints and results.json: {exc}")
    return problems


# -------------------------------------------------------------------------------------------------- files
def checkpoint_bytes(model: torch.nn.Module, optimizer_states: int = 2) -> int:
    """About the size of one training checkpoint: the state dict plus ``optimizer_states`` tensors per trainable
    parameter (Adam keeps two)."""
    state = tensor_bytes(model.state_dict())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return state + optimizer_states * trainable


def _writable(folder: str, what: str) -> List[str]:
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".preflight-{uuid.uuid4().hex}")
        with open(probe, "wb") as f:
            f.write(b"0")
        os.remove(probe)
    except OSError as exc:
        return [f"{what} {folder!r} is not writable: {exc}"]
    return []


def _check_save_dir(cfg: CN, model) -> List[str]:
    save_dir = cfg.data.save_dir
    problems = _writable(save_dir, "data.save_dir")
    if problems or cfg.test.evaluate:
        return problems
    problems = _writable(os.path.join(save_dir, CHECKPOINT_DIR), "the checkpoint folder")
    if problems:
        return problems
    needed = 2 * checkpoint_bytes(model, 1 if cfg.train.optim == "sgd" else 2)
    free = shutil.disk_usage(save_dir).free
    if free < needed:
        problems.append(f"data.save_dir {save_dir!r} has {free / 2 ** 30:.2f} GiB free; a checkpoint of this model is "
                        f"about {needed / 2 / 2 ** 30:.2f} GiB and an atomic write needs twice that")
    return problems


def preflight(cfg: CN, datamanager, model) -> None:
    """Raise :class:`PreflightError` listing every check that fails (module docstring); prints one line when all
    pass."""
    problems = _check_save_dir(cfg, model) + _check_cameras(cfg, datamanager, model) + _check_ranks(cfg, datamanager)
    problems += _check_matches(cfg, datamanager) + _check_settings(cfg)
    if cfg.tfclip.memory_cache and not cfg.test.evaluate:
        problems += _writable(cfg.tfclip.memory_cache, "tfclip.memory_cache")
    if not cfg.test.evaluate and len(datamanager.train_loader) == 0:
        problems.append(f"the training loader yields no batch ({len(datamanager.train_loader.dataset.train)} "
                        f"tracklets, train.batch_size {cfg.train.batch_size}, sampler.num_instances "
                        f"{cfg.sampler.num_instances}, {cfg.sampler.train_sampler})")
    if problems:
        raise PreflightError("the run would fail after it started:\n  - " + "\n  - ".join(problems))
    print("Preflight checks passed (output folder, cameras, ranks, matches, config)")


def _unused_transform(frames):
    return frames


def preflight_splits(cfg: CN, num_splits: int) -> None:
    """Parse every source and target dataset for split ids 0..num_splits-1 (``tfclip.all_splits``); the first
    that fails is raised as :class:`PreflightError` naming the split."""
    registry = host.video_dataset_registry()
    for name in dict.fromkeys(list(cfg.data.sources) + list(cfg.data.targets)):
        for split_id in range(num_splits):
            try:
                with activated_config(cfg):
                    registry[name](root=cfg.data.root, split_id=split_id, mode="train", verbose=False,
                                   transform=_unused_transform)
            except (OSError, ValueError, KeyError, IndexError) as exc:
                raise PreflightError(f"tfclip.all_splits: {name} split {split_id} cannot be built: {exc}") from exc
