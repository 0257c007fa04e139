"""Tracklet datasets, frame sampling plans and sequence transforms."""
from .frames import BadFrameError, FrameReader
from .sampling import dense_chunks, rrs_chunks, rrs_test_indices, rrs_train_indices, sliding_windows, subtracklet_bounds
from .synthvid import generate_synthvid
from .transforms import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, BatchNormaliser, SequenceTransform,
                         build_normaliser, build_sequence_transforms)
from .video import DenseClipDataset, TrackletSamplingMixin, TrackletVideoDataset, build_datamanager

__all__ = [
    "BadFrameError", "BatchNormaliser", "CLIP_MEAN", "CLIP_STD", "DenseClipDataset", "FrameReader", "IMAGENET_MEAN",
    "IMAGENET_STD", "SequenceTransform", "TrackletSamplingMixin", "TrackletVideoDataset", "build_datamanager",
    "build_normaliser", "build_sequence_transforms", "dense_chunks", "generate_synthvid", "rrs_chunks",
    "rrs_test_indices", "rrs_train_indices", "sliding_windows", "subtracklet_bounds",
]
