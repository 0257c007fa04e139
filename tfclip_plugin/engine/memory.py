"""Phase 1: the CLIP-Memory (tfclip-reference.md section 2).

With the frozen pretrained encoder and no SIE, every training tracklet is cut into dense chunks
(consecutive ``seq_len`` frames, the last padded cyclically); a chunk's feature is its projected CLS token
averaged over frames (``model.encode_for_memory``), a tracklet's feature the mean of its chunk features, and
memory row k the plain mean over the tracklets of label k. Chunks of many tracklets share a batch. Under
torchrun each rank encodes a block of the tracklets and the tracklet features are gathered in order, so
every rank builds the single-process memory.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.transforms import BatchNormaliser
from ..distributed import gather_shards
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


@torch.no_grad()
def build_clip_memory(
    model: nn.Module,
    tracklets: Sequence[tuple],
    transform: Any,
    num_classes: int,
    seq_len: int = 8,
    batch_size: int = 32,
    workers: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    normaliser: Optional[BatchNormaliser] = None,
) -> torch.Tensor:
    """The CLIP-Memory (num_classes, E) float32 of ``model`` on training ``tracklets``
    (torchreid tuples ``(img_paths, pid, camid[, dsetid])``) seen through the test ``transform`` (uint8 clips,
    normalised on ``device`` by ``normaliser``, default the transform's).

    The model runs in eval mode (restored afterwards) under ``no_grad``; in a process group every rank
    encodes its block of the tracklets (``distributed.gather_shards``).
    """
    from ..data.video import DenseClipDataset

    def block_features(block: range) -> torch.Tensor:
        dataset = DenseClipDataset([tracklets[i] for i in block], transform, seq_len=seq_len)
        return dense_tracklet_features(
            lambda clips, camids: model.encode_for_memory(clips), dataset, batch_size, workers, device, precision,
            desc="CLIP-Memory", normaliser=normaliser,
        )

    was_training = model.training
    model.eval()
    try:
        features = gather_shards(block_features, len(tracklets))
    finally:
        model.train(was_training)
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
    tracklets (paths and labels) and ``settings`` (image size, normalisation, seq_len, precision, ...)."""
    encoder = getattr(model, "backbone", model)
    dataset = hashlib.blake2b(digest_size=16)
    for item in tracklets:
        dataset.update(json.dumps([list(item[0]), int(item[1]), int(item[2])]).encode())
    parts = [_digest_tensors(encoder.state_dict()), dataset.hexdigest(), json.dumps(settings, sort_keys=True)]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


def cached_memory_path(cache_dir: str, key: str) -> str:
    """Where a memory with ``key`` lives in ``tfclip.memory_cache``."""
    return os.path.join(cache_dir, f"clip-memory-{key}.pt")


def load_cached_memory(cache_dir: str, key: str) -> Optional[torch.Tensor]:
    """The cached memory for ``key``, or None."""
    path = cached_memory_path(cache_dir, key)
    return load_checkpoint(path)["memory"] if os.path.isfile(path) else None


def store_cached_memory(cache_dir: str, key: str, memory: torch.Tensor, settings: Dict[str, Any]) -> str:
    """Write ``memory`` under ``key`` atomically; returns the path."""
    return save_checkpoint({"memory": memory.cpu(), "settings": json.dumps(settings, sort_keys=True)},
                           cached_memory_path(cache_dir, key))
