"""Tracklet and image datasets, frame sampling plans, sequence and image transforms, data managers."""
from .frames import BadFrameError, FrameReader
from .image import CheckedImageDataset, build_image_datamanager
from .image_transforms import IMAGE_TRANSFORMS, ImageTransform, PixelErasing, build_image_transforms
from .managers import build_datamanager
from .sampling import dense_chunks, rrs_chunks, rrs_test_indices, rrs_train_indices, sliding_windows, subtracklet_bounds
from .synthimg import generate_synthimg
from .synthvid import generate_synthvid
from .transforms import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, BatchNormaliser, SequenceTransform,
                         build_normaliser, build_sequence_transforms)
from .video import DenseClipDataset, TrackletSamplingMixin, TrackletVideoDataset, build_video_datamanager

__all__ = [
    "BadFrameError", "BatchNormaliser", "CLIP_MEAN", "CLIP_STD", "CheckedImageDataset", "DenseClipDataset",
    "FrameReader", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_TRANSFORMS", "ImageTransform",
    "PixelErasing", "SequenceTransform", "TrackletSamplingMixin", "TrackletVideoDataset", "build_datamanager",
    "build_image_datamanager", "build_image_transforms", "build_normaliser", "build_sequence_transforms",
    "build_video_datamanager", "dense_chunks", "generate_synthimg", "generate_synthvid", "rrs_chunks",
    "rrs_test_indices", "rrs_train_indices", "sliding_windows", "subtracklet_bounds",
]
