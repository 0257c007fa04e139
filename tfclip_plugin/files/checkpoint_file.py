"""The plugin's checkpoint file: names, atomic writes, ``weights_only`` reads, resume.

A checkpoint is torchreid's dict (``state_dict``, ``epoch`` = epochs done, ``rank1``, ``optimizer``,
``scheduler``) with ``rank1`` as a Python float (torchreid's ``np.float32`` cannot be read with
``weights_only=True``), plus ``mAP``, ``config`` (the run's yacs config as a YAML string, so a model can be
rebuilt from the file alone) and ``rng`` (python, numpy and torch generator states, so a resumed run
continues the same random streams).
"""
from __future__ import annotations

import contextlib
import os
import random
from typing import Any, Dict, Optional, Union

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write

CHECKPOINT_DIR = "model"
LATEST_CHECKPOINT = "checkpoint-latest.pth.tar"
EPOCH_CHECKPOINT_PREFIX = "model.pth.tar-"
BEST_CHECKPOINT = "model-best.pth.tar"


def checkpoint_path(save_dir: str, kind: str, epoch: int = 0) -> str:
    """Where a run in ``save_dir`` keeps a checkpoint: ``kind`` 'latest' (after every epoch), 'epoch'
    (``model.pth.tar-<epoch>``, torchreid's name) or 'best' (test-set selection)."""
    names = {"latest": LATEST_CHECKPOINT, "epoch": f"{EPOCH_CHECKPOINT_PREFIX}{epoch}", "best": BEST_CHECKPOINT}
    if kind not in names:
        raise ValueError(f"checkpoint kind must be one of {', '.join(names)}; got {kind!r}")
    return os.path.join(save_dir, CHECKPOINT_DIR, names[kind])


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors inside nested dicts, lists and tuples (about a checkpoint's size)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def save_checkpoint(state: Dict[str, Any], path: str) -> str:
    """Write ``state`` to ``path`` atomically (``files.atomic.atomic_write``); returns ``path``.

    Raises ``WriteFailedError`` naming the path, the size needed and the free space when the disk refuses it.
    """
    with atomic_write(path, "wb", size_hint=tensor_bytes(state)) as stream:
        torch.save(state, stream)
    return path


def numpy_scalar_globals() -> list:
    """What a torchreid checkpoint's ``np.float32`` rank1 unpickles through (numpy 1.x and 2.x names)."""
    core = getattr(np, "_core", None) or np.core
    names = [core.multiarray.scalar, np.dtype]
    names += [getattr(np.dtypes, n) for n in ("Float32DType", "Float64DType") if hasattr(np, "dtypes")]
    return names


def load_checkpoint(path: str, map_location: Union[str, torch.device] = "cpu", mmap: bool = False) -> Dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)`` (``mmap``: tensors stay on disk until used).

    Files written by torchreid's ``Engine.save_model`` (rank1 as a numpy scalar) load too: the numpy
    scalar type is allowed explicitly, nothing else is.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    # the context removes what it added on exit: add only what is not allowed already (add_safe_globals)
    extra = [g for g in numpy_scalar_globals() if g not in torch.serialization.get_safe_globals()] if allow else []
    try:
        with allow(extra) if allow else contextlib.nullcontext():
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:
        raise RuntimeError(f"cannot read checkpoint {path} with weights_only=True: {exc}") from exc


def checkpoint_epoch(path: str) -> int:
    """The number of epochs a training checkpoint holds (its ``epoch``), read without loading its tensors (files in
    torch's legacy format, which cannot be memory-mapped, are read whole)."""
    try:
        checkpoint = load_checkpoint(path, mmap=True)
    except RuntimeError:
        checkpoint = load_checkpoint(path)
    if "epoch" not in checkpoint:
        raise KeyError(f"{path} has no 'epoch' entry: it is a weights file, not a training checkpoint")
    return int(checkpoint["epoch"])


def state_dict_of(checkpoint: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The model weights of a checkpoint dict (torchreid/ours: ``state_dict``; else the dict itself),
    with DataParallel's ``module.`` prefixes removed."""
    state = checkpoint.get("state_dict", checkpoint)
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def rng_state() -> Dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states in ``weights_only``-loadable types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume(
    path: str,
    model: nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    scaler: Optional[Any] = None,
) -> int:
    """Restore model, optimizer, scheduler, grad scaler and random states; return the epoch to start from.

    The model must match the checkpoint exactly (``strict`` loading): resuming is not fine-tuning.
    """
    checkpoint = load_checkpoint(path)
    if "epoch" not in checkpoint:
        raise KeyError(f"{path} has no 'epoch' entry: it is a weights file, not a training checkpoint")
    model.load_state_dict(state_dict_of(checkpoint))
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if target is not None and checkpoint.get(name) is not None:
            target.load_state_dict(checkpoint[name])
    if "rng" in checkpoint:
        set_rng_state(checkpoint["rng"])
    return int(checkpoint["epoch"])
