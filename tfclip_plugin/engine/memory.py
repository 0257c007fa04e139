"""Phase 1: the CLIP-Memory (AsuradaYuci/TF-CLIP ``processor/processor_clipreid_stage2.py``, before training).

With the frozen pretrained encoder and no SIE, every training tracklet is cut into dense chunks
(consecutive ``seq_len`` frames, the last padded cyclically); a chunk's feature is its projected CLS token
averaged over frames (``model.encode_for_memory``), a tracklet's feature the mean of its chunk features, and
memory row k the plain mean over the tracklets of label k. Chunks of many tracklets share a batch. Under
torchrun each rank encodes a block of the tracklets and the tracklet features are gathered in order, so
every rank builds the single-process memory.

The per-tracklet features (:func:`training_features`) also feed stage 1 of text mode
(``engine.prompt_learning``). Image datasets (items ``(img_path, pid, camid, ...)``) are read as one-frame
tracklets (:func:`as_tracklets`), one feature per image. Both kinds of result can be cached in
``tfclip.memory_cache`` under distinct file names (:data:`CACHE_KINDS`).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..data.transforms import BatchNormaliser
from ..files.checkpoint_file import load_checkpoint, save_checkpoint
from ..distributed import gather_shards
from ..stopping import raise_if_stop_requested
from .features import dense_tracklet_features


def identity_means(features: torch.Tensor, pids: Sequence[int], num_classes: int) -> torch.Tensor:
    """Row k = plain mean of ``features`` (N, E) over the items with pid k: (num_classes, E).

    Raises ``ValueError`` listing the labels without any tracklet (the rows would not line up with labels).
    """
    pids = torch.as_tensor(np.asarray(pids), dtype=torch.long)
    if pids.numel() and (int(pids.min()) < 0 or int(pids.max()) >= num_classes):
        raise ValueError(f"training labels must lie in [0, {num_classes}); got [{int(pids.min())}, {int(pids.max())}]")
    counts = torch.bincount(pids, minlength=num_classes)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"CLIP-Memory: labels without any training tracklet: {empty[:20]} ({len(empty)} in all)")
    sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64)
    sums.index_add_(0, pids, features.double())
    return (sums / counts[:, None]).float()


def as_tracklets(items: Sequence[tuple]) -> Tuple[List[tuple], bool]:
    """(torchreid training items as tracklets, whether they are images): an image item ``(img_path, pid, camid,
    ...)`` becomes the one-frame tracklet ``([img_path], pid, camid)``; tracklets are returned as they are."""
    items = list(items)
    images = bool(items) and isinstance(items[0][0], str)
    return ([([item[0]], item[1], item[2]) for item in items] if images else items), images


@torch.no_grad()
def training_features(
    model: nn.Module,
    tracklets: Sequence[tuple],
    transform: Any,
    seq_len: int = 8,
    batch_size: int = 32,
    workers: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    desc: str = "CLIP-Memory",
    normaliser: Optional[BatchNormaliser] = None,
) -> torch.Tensor:
    """(N, E) float32: per training tracklet (torchreid tuples ``(img_paths, pid, camid[, dsetid])``, seen
    through the test ``transform``: uint8 clips, normalised on ``device`` by ``normaliser``, default the
    transform's) the mean over its dense ``seq_len``-frame chunks of
    ``model.encode_for_memory`` (projected CLS averaged over frames, no SIE); ``seq_len`` 1 for one-frame
    tracklets (images).

    The model runs in eval mode (restored afterwards) under ``no_grad``; in a process group every rank
    encodes its block of the tracklets (``distributed.gather_shards``) and every rank gets all rows. A stop
    request (``stopping``) ends it before the next batch.
    """
    from ..data.video import DenseClipDataset

    def encode(clips: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        raise_if_stop_requested("phase 1")
        return model.encode_for_memory(clips)

    def block_features(block: range) -> torch.Tensor:
        dataset = DenseClipDataset([tracklets[i] for i in block], transform, seq_len=seq_len)
        return dense_tracklet_features(encode, dataset, batch_size, workers, device, precision, desc=desc,
                                       normaliser=normaliser)

    was_training = model.training
    model.eval()
    try:
        return gather_shards(block_features, len(tracklets))
    finally:
        model.train(was_training)


def build_clip_memory(model: nn.Module, tracklets: Sequence[tuple], transform: Any, num_classes: int,
                      **options: Any) -> torch.Tensor:
    """The CLIP-Memory (num_classes, E) float32 of ``model`` on training ``tracklets``: the identity means
    (:func:`identity_means`) of their :func:`training_features` (``options``: its keyword arguments, e.g.
    ``seq_len``, ``batch_size``, ``workers``, ``device``, ``precision``, ``normaliser``)."""
    features = training_features(model, tracklets, transform, **options)
    return identity_means(features, [t[1] for t in tracklets], num_classes)


def _digest_tensors(state: Dict[str, torch.Tensor]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def memory_cache_key(model: nn.Module, tracklets: Sequence[tuple], settings: Dict[str, Any]) -> str:
    """A key for a cached memory: the encoder weights (``model.backbone`` when present), the training
    tracklets or images (paths and labels) and ``settings`` (image size, normalisation, seq_len, precision, ...)."""
    encoder = getattr(model, "backbone", model)
    dataset = hashlib.blake2b(digest_size=16)
    for item in tracklets:
        paths = [item[0]] if isinstance(item[0], str) else list(item[0])
        dataset.update(json.dumps([paths, int(item[1]), int(item[2])]).encode())
    parts = [_digest_tensors(encoder.state_dict()), dataset.hexdigest(), json.dumps(settings, sort_keys=True)]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


CACHE_KINDS = ("clip-memory", "stage1-features")  # the CLIP-Memory; the per-tracklet features of stage 1


def cached_memory_path(cache_dir: str, key: str, kind: str = "clip-memory") -> str:
    """Where a cached tensor of ``kind`` (:data:`CACHE_KINDS`) with ``key`` lives in ``tfclip.memory_cache``."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"cache kind must be one of {', '.join(CACHE_KINDS)}; got {kind!r}")
    return os.path.join(cache_dir, f"{kind}-{key}.pt")


def load_cached_memory(cache_dir: str, key: str, kind: str = "clip-memory") -> Optional[torch.Tensor]:
    """The cached tensor of ``kind`` for ``key``, or None."""
    path = cached_memory_path(cache_dir, key, kind)
    return load_checkpoint(path)["memory"] if os.path.isfile(path) else None


def store_cached_memory(cache_dir: str, key: str, memory: torch.Tensor, settings: Dict[str, Any],
                        kind: str = "clip-memory") -> str:
    """Write ``memory`` (a tensor of ``kind``) under ``key`` atomically; returns the path. Called with the complete
    tensor only, so a stopped or failed phase 1 leaves no entry, never a partial one."""
    return save_checkpoint({"memory": memory.cpu(), "settings": json.dumps(settings, sort_keys=True)},
                           cached_memory_path(cache_dir, key, kind))
