"""Tracklet features from clips: dense chunks batched across tracklets, or one clip per tracklet.

Loaders ship uint8 clips; a :class:`~tfclip_plugin.data.transforms.BatchNormaliser` turns each batch into
normalised float32 on the device, and an ``encode`` callable maps those clips (B, T, 3, H, W) and camera ids (B,)
to features (B, D); dense extraction averages the chunk features of each tracklet (scatter-mean with
``index_add_``).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterable, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchNormaliser, normaliser_of, shared_normaliser
from ..distributed import is_main_process
from ..stopping import ignore_stop_signals_in_worker

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

Encoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for ``tfclip.precision`` ('fp32' = no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"tfclip.precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def bf16_weights(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with its floating-point parameters and buffers in bfloat16 (no gradients; the model
    itself is untouched), in its mode. Run it under bf16 autocast (``autocast(device, 'bf16')``): float32 inputs
    and tensors the forward creates are then cast where the products need it."""
    clone = copy.deepcopy(model).to(torch.bfloat16)
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    return clone


class ReusedClipsCollate:
    """torch's ``default_collate`` whose stacked uint8 clips ('img') go into one buffer kept between batches, for
    a loader without workers whose loop is done with each batch before it fetches the next. (A fresh stack of 32
    8-frame 256x128 clips is 25 MB, which glibc maps afresh for every batch: page-faulting it cost about 60 us of
    CPU per frame, a third of decoding it.)"""

    def __init__(self) -> None:
        self.buffer: Optional[torch.Tensor] = None

    def __call__(self, items):
        clips = [item["img"] for item in items]
        if clips[0].dtype != torch.uint8:
            return default_collate(items)
        batch = default_collate([{k: v for k, v in item.items() if k != "img"} for item in items])
        shape = (len(clips),) + tuple(clips[0].shape)
        if self.buffer is None or self.buffer.shape[1:] != shape[1:] or len(self.buffer) < len(clips):
            self.buffer = torch.empty(shape, dtype=torch.uint8)
        batch["img"] = torch.stack(clips, out=self.buffer[:len(clips)])
        return batch


def dense_tracklet_features(
    encode: Encoder,
    dataset: Dataset,
    batch_size: int,
    workers: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    desc: str = "dense features",
    normaliser: Optional[BatchNormaliser] = None,
) -> torch.Tensor:
    """Mean over each tracklet's chunks of ``encode(chunk)``: (num_tracklets, D) float32 on the CPU.

    ``dataset`` is a ``DenseClipDataset``: items ``{'img' (T,3,H,W), 'index', 'pid', 'camid'}``, attributes
    ``num_tracklets`` and ``transform``. Chunks of many tracklets share a batch of ``batch_size`` clips, normalised
    on ``device`` by ``normaliser`` (default: the dataset transform's).
    """
    device = torch.device(device)
    model_input = (normaliser or normaliser_of(getattr(dataset, "transform", None))).stream(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", collate_fn=ReusedClipsCollate() if workers == 0 else None,
                        worker_init_fn=ignore_stop_signals_in_worker)
    sums = None
    counts = torch.zeros(dataset.num_tracklets)
    for batch in tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True, disable=not is_main_process()):
        clips = model_input(batch["img"])
        camids = batch["camid"].to(device, non_blocking=True)
        with autocast(device, precision):
            features = encode(clips, camids)
        features = features.float().cpu()
        if sums is None:
            sums = torch.zeros(dataset.num_tracklets, features.shape[1])
        index = torch.as_tensor(batch["index"], dtype=torch.long)
        sums.index_add_(0, index, features)
        counts.index_add_(0, index, torch.ones(len(index)))
    if sums is None or bool((counts == 0).any()):
        missing = int((counts == 0).sum())
        raise RuntimeError(f"{missing} of {dataset.num_tracklets} tracklets produced no clip (empty frame lists?)")
    return sums / counts[:, None]


def loader_features(
    encode: Encoder, loader: Iterable[dict], device: torch.device | str = "cpu", precision: str = "fp32",
    desc: str = "features", normaliser: Optional[BatchNormaliser] = None,
) -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """One feature per batch item of a torchreid test loader: (features (N, D), pids (N,), camids (N,)); clips
    normalised on ``device`` by ``normaliser`` (default: ImageNet statistics; float clips pass unchanged)."""
    device = torch.device(device)
    model_input = (normaliser or shared_normaliser(IMAGENET_MEAN, IMAGENET_STD)).stream(device)
    features, pids, camids = [], [], []
    for batch in tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True, disable=not is_main_process()):
        with autocast(device, precision):
            out = encode(model_input(batch["img"]), batch["camid"].to(device, non_blocking=True))
        features.append(out.float().cpu())
        pids.append(np.asarray(batch["pid"]))
        camids.append(np.asarray(batch["camid"]))
    return torch.cat(features), np.concatenate(pids), np.concatenate(camids)
