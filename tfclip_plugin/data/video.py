"""Tracklet datasets on top of torchreid's ``VideoDataset`` and the data manager the runner uses.

- :class:`TrackletSamplingMixin` gives a torchreid video dataset TF-CLIP's frame plans ('rrs': RRS-train in
  mode 'train', RRS-test in 'query'/'gallery'), sequence transforms and checked frame reading.
- :class:`DenseClipDataset` turns tracklets into one item per dense chunk, so a DataLoader batches the
  chunks of many tracklets (the reference evaluates with batch size 1).
- :func:`build_video_datamanager` builds torchreid's ``VideoDataManager`` and installs the sequence transforms.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from yacs.config import CfgNode as CN

from .. import host
from ..config import activated_config, videodata_kwargs
from ..stopping import ignore_stop_signals_in_worker
from .frames import FrameReader, set_default_skip_bad_frames
from .sampling import TORCHREID_METHODS, dense_chunks, rrs_test_indices, rrs_train_indices, torchreid_indices
from .image_transforms import frame_output
from .transforms import SequenceTransform, build_sequence_transforms

SAMPLE_METHODS = ("rrs",) + TORCHREID_METHODS


def apply_transform(transform, frames: List[torch.Tensor]) -> torch.Tensor:
    """(T, 3, H, W) from decoded frames (uint8 (3, H', W') each): a :class:`SequenceTransform` sees the whole list
    and returns uint8; an image transform (``ImageTransform``, the one-frame tracklets of image data) each frame,
    its :meth:`~.image_transforms.ImageTransform.loader_output`; any other transform (torchreid's per-image
    ``Compose``, normalised float32 out) each frame on its own as a Pillow image."""
    if isinstance(transform, SequenceTransform):
        return transform(frames)
    return torch.stack([frame_output(transform, frame) for frame in frames])


class TrackletSamplingMixin:
    """Mixed in before a torchreid ``VideoDataset`` subclass: ``class Mars(TrackletSamplingMixin, host.Mars)``.

    ``sample_method`` 'rrs': mode 'train' -> :func:`rrs_train_indices`, 'query'/'gallery' ->
    :func:`rrs_test_indices`; 'evenly', 'random', 'all' select the frames torchreid selects. ``__getitem__``
    returns torchreid's dict ``{'img': (T, 3, H, W), 'pid', 'camid', 'dsetid'}``, 'img' uint8 under a
    :class:`SequenceTransform` (normalised on the device by the engine), float32 under a per-image transform.

    Keyword argument ``skip_bad_frames`` (default: ``tfclip.skip_bad_frames`` of the active config): see
    :class:`~tfclip_plugin.data.frames.FrameReader`. Every listed frame must exist once the splits are parsed
    (:func:`~tfclip_plugin.data.integrity.check_listed_frames`; a warning with ``skip_bad_frames``).
    """

    def __init__(self, *args, skip_bad_frames: Optional[bool] = None, **kwargs) -> None:
        from .integrity import check_listed_frames

        self.frame_reader = FrameReader(skip_bad_frames)
        super().__init__(*args, **kwargs)
        check_listed_frames(type(self).__name__, {"train": self.train, "query": self.query, "gallery": self.gallery},
                            warn_only=self.frame_reader.skip_bad_frames)
        if self.sample_method not in SAMPLE_METHODS:
            raise ValueError(f"video.sample_method must be one of {', '.join(SAMPLE_METHODS)}; "
                             f"got {self.sample_method!r}")

    def frame_indices(self, num_frames: int) -> np.ndarray:
        """The frames to load for a tracklet of ``num_frames`` frames in this dataset's mode."""
        if self.sample_method == "rrs":
            if self.mode == "train":
                return rrs_train_indices(num_frames, self.seq_len)
            return rrs_test_indices(num_frames, self.seq_len)
        return torchreid_indices(self.sample_method, num_frames, self.seq_len)

    def __getitem__(self, index: int) -> dict:
        img_paths, pid, camid, dsetid = self.data[index]
        frames = self.frame_reader.read(img_paths, self.frame_indices(len(img_paths)))
        return {"img": apply_transform(self.transform, frames), "pid": int(pid), "camid": int(camid),
                "dsetid": int(dsetid)}


class TrackletVideoDataset(TrackletSamplingMixin, host.VideoDataset):
    """torchreid's ``VideoDataset`` with the mixin: for tuple lists that come from no registered class
    (several training sources summed by torchreid, datasets registered by others)."""


class DenseClipDataset(Dataset):
    """One item per dense chunk (:func:`dense_chunks`) of every tracklet, in tracklet order.

    Args:
        tracklets: torchreid tuples ``(img_paths, pid, camid[, dsetid])``.
        transform: the test transform (a :class:`SequenceTransform` or a per-image transform).
        seq_len: frames per chunk.
        skip_bad_frames: as :class:`~tfclip_plugin.data.frames.FrameReader`.

    Items: ``{'img': (seq_len, 3, H, W) (uint8 under a SequenceTransform), 'index': tracklet index, 'pid',
    'camid'}``. Attributes:
    ``tracklet_index`` (n_chunks,), ``chunks`` (n_chunks, seq_len) frame indices, ``num_tracklets``.
    """

    def __init__(self, tracklets: Sequence[tuple], transform, seq_len: int = 8,
                 skip_bad_frames: Optional[bool] = None) -> None:
        self.tracklets = list(tracklets)
        self.transform = transform
        self.seq_len = seq_len
        self.frame_reader = FrameReader(skip_bad_frames)
        plans = []
        for i, item in enumerate(self.tracklets):
            if len(item[0]) == 0:
                raise ValueError(f"tracklet {i} (pid {item[1]}, camid {item[2]}) has no frames")
            plans.append(dense_chunks(len(item[0]), seq_len))
        self.num_tracklets = len(self.tracklets)
        counts = [len(plan) for plan in plans]
        self.tracklet_index = np.repeat(np.arange(self.num_tracklets), counts)
        self.chunks = np.concatenate(plans) if plans else np.zeros((0, seq_len), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> dict:
        tracklet = int(self.tracklet_index[index])
        img_paths, pid, camid = self.tracklets[tracklet][:3]
        frames = self.frame_reader.read(img_paths, self.chunks[index])
        return {"img": apply_transform(self.transform, frames), "index": tracklet, "pid": int(pid),
                "camid": int(camid)}


def rebuilt_loader(loader: DataLoader, dataset: Dataset) -> DataLoader:
    """A DataLoader over ``dataset`` with ``loader``'s sampler, batch size, workers, pinning and drop_last, its
    workers ignoring stop signals (:func:`~tfclip_plugin.stopping.ignore_stop_signals_in_worker`)."""
    return DataLoader(dataset, sampler=loader.sampler, batch_size=loader.batch_size, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      worker_init_fn=ignore_stop_signals_in_worker)


def install_transforms(datamanager, train, test, with_transform: Callable[[DataLoader, object], DataLoader]) -> None:
    """Replace the train loader by ``with_transform(loader, train)`` and every query/gallery loader by
    ``with_transform(loader, test)``; set ``datamanager.transform_tr`` / ``transform_te``."""
    datamanager.train_loader = with_transform(datamanager.train_loader, train)
    for loaders in datamanager.test_loader.values():
        for split in ("query", "gallery"):
            loaders[split] = with_transform(loaders[split], test)
    datamanager.transform_tr, datamanager.transform_te = train, test


def _tracklet_loader(loader: DataLoader, transform: SequenceTransform) -> DataLoader:
    """``loader`` with ``transform`` installed; a dataset without the mixin is rebuilt as a
    :class:`TrackletVideoDataset` over the same tuples (same sampler, batch size, workers)."""
    dataset = loader.dataset
    if isinstance(dataset, TrackletSamplingMixin):
        dataset.transform = transform
        loader.worker_init_fn = ignore_stop_signals_in_worker
        return loader
    return rebuilt_loader(loader, TrackletVideoDataset(
        dataset.train, dataset.query, dataset.gallery, transform=transform, mode=dataset.mode,
        seq_len=dataset.seq_len, sample_method=dataset.sample_method, verbose=False,
    ))


def build_video_datamanager(cfg: CN):
    """torchreid's ``VideoDataManager(**videodata_kwargs(cfg))`` with TF-CLIP's sequence transforms.

    The datasets are built with ``cfg`` active, so they read ``tfclip.lsvid_subtracklet`` and
    ``tfclip.skip_bad_frames``; the latter also becomes the process default of frame readers built later
    (the engine's dense test and CLIP-Memory datasets).
    """
    if cfg.data.type != "video":
        raise ValueError(f"data.type must be 'video' for tracklet datasets; got {cfg.data.type!r}")
    if cfg.video.sample_method not in SAMPLE_METHODS:
        raise ValueError(f"video.sample_method must be one of {', '.join(SAMPLE_METHODS)}; "
                         f"got {cfg.video.sample_method!r}")
    train, test = build_sequence_transforms(
        cfg.data.height, cfg.data.width, list(cfg.data.transforms), cfg.data.norm_mean, cfg.data.norm_std,
        erase_at_size_position=cfg.tfclip.erase_at_size_position,
    )
    set_default_skip_bad_frames(bool(cfg.tfclip.skip_bad_frames))
    with activated_config(cfg):
        datamanager = host.VideoDataManager(**videodata_kwargs(cfg))
    install_transforms(datamanager, train, test, _tracklet_loader)
    return datamanager
