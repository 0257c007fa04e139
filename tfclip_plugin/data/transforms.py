"""Sequence-consistent transforms: a tracklet's frames (PIL images) -> one tensor (T, 3, H, W).

TF-CLIP's training transform (AsuradaYuci/TF-CLIP ``datasets/make_dataloader_clipreid.py:130-134``,
``utils/seqtransforms.py``), in order: bilinear resize to (H, W), one
horizontal-flip coin for the whole sequence, the random sized eraser decided per frame (in PIL space, filled
with one random RGB colour), ToTensor, normalisation (ImageNet statistics by default, as the reference).
The test transform is resize, ToTensor, normalisation.

Randomness comes from Python's ``random`` module (as the reference's ``SeqT`` classes), or from an explicit
``random.Random`` passed to the call.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from types import ModuleType
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip.OPENAI_DATASET_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # open_clip.OPENAI_DATASET_STD

KNOWN_TRANSFORMS = ("random_flip", "random_erase")

RandomSource = Union[random.Random, ModuleType]  # a Random instance or the random module


@dataclass(frozen=True)
class RandomSizedErasing:
    """The reference's ``RandomSizedEarser``, decided independently for each frame.

    With probability ``p`` a rectangle of area fraction U[sl, sh] and aspect ratio U[r, 1/r] is filled
    with one random RGB colour. Its size is (floor(We), floor(He)) and its top-left corner (ceil(xe),
    ceil(ye)), the sampled position. ``at_size_position`` reproduces the reference's paste call, which
    passes the rectangle's size as its position: the fill then covers [w, 2w) x [h, 2h), clipped.
    """

    sl: float = 0.02
    sh: float = 0.2
    r: float = 0.3
    p: float = 0.5
    at_size_position: bool = False

    def __call__(self, frame: Image.Image, rng: RandomSource) -> Image.Image:
        if rng.uniform(0.0, 1.0) > self.p:
            return frame
        width, height = frame.size
        area = width * height
        while True:
            target = rng.uniform(self.sl, self.sh) * area
            aspect = rng.uniform(self.r, 1 / self.r)
            box_h = math.sqrt(target * aspect)
            box_w = math.sqrt(target / aspect)
            xe = rng.uniform(0, width - box_w)
            ye = rng.uniform(0, height - box_h)
            if xe + box_w <= width and ye + box_h <= height and xe > 0 and ye > 0:
                break
        x1, y1 = math.ceil(xe), math.ceil(ye)
        size = (math.floor(x1 + box_w) - x1, math.floor(y1 + box_h) - y1)
        colour = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        erased = frame.copy()
        erased.paste(Image.new("RGB", size, colour), size if self.at_size_position else (x1, y1))
        return erased


@dataclass(frozen=True)
class SequenceTransform:
    """Frames (list of PIL images, or one image) -> float tensor (T, 3, H, W) (or (3, H, W)).

    Args:
        height, width: output size (bilinear PIL resize; frames of that size are left as they are).
        flip: one horizontal-flip coin (p = 0.5) for the whole sequence.
        eraser: per-frame random sized erasing, or None.
        mean, std: per-channel normalisation of the [0, 1] pixels.
    """

    height: int
    width: int
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    flip: bool = False
    eraser: Optional[RandomSizedErasing] = None

    def __call__(self, frames: Union[Sequence[Image.Image], Image.Image],
                 rng: Optional[RandomSource] = None) -> torch.Tensor:
        if isinstance(frames, Image.Image):
            return self([frames], rng)[0]
        if len(frames) == 0:
            raise ValueError("SequenceTransform needs at least one frame")
        rng = random if rng is None else rng
        frames = [self._resize(frame) for frame in frames]
        if self.flip and rng.random() < 0.5:
            frames = [frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for frame in frames]
        if self.eraser is not None:
            frames = [self.eraser(frame, rng) for frame in frames]
        return self.to_tensor(frames)

    def _resize(self, frame: Image.Image) -> Image.Image:
        if frame.mode != "RGB":
            frame = frame.convert("RGB")
        if frame.size == (self.width, self.height):
            return frame
        return frame.resize((self.width, self.height), Image.Resampling.BILINEAR)

    def to_tensor(self, frames: List[Image.Image]) -> torch.Tensor:
        """Resized RGB frames -> normalised float32 (T, 3, H, W)."""
        pixels = torch.from_numpy(np.stack([np.asarray(frame, dtype=np.uint8) for frame in frames]))
        clips = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return clips.sub_(mean).div_(std)


def _channels(values: Optional[Sequence[float]], default: Tuple[float, float, float], name: str):
    if values is None:
        return default
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (R, G, B); got {list(values)}")
    return values


def build_sequence_transforms(
    height: int,
    width: int,
    transforms: Union[str, Sequence[str], None],
    norm_mean: Optional[Sequence[float]] = None,
    norm_std: Optional[Sequence[float]] = None,
    erase_at_size_position: bool = False,
) -> Tuple[SequenceTransform, SequenceTransform]:
    """(train, test) sequence transforms for ``data.transforms`` names ('random_flip', 'random_erase').

    ``norm_mean``/``norm_std`` None -> ImageNet statistics (the reference's); pass ``CLIP_MEAN``/``CLIP_STD``
    for CLIP's. ``erase_at_size_position`` = ``tfclip.erase_at_size_position``.
    """
    names = [transforms] if isinstance(transforms, str) else list(transforms or [])
    names = [name.lower() for name in names]
    unknown = [name for name in names if name not in KNOWN_TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown transform(s) {unknown} in data.transforms; known: {', '.join(KNOWN_TRANSFORMS)}")
    if height < 1 or width < 1:
        raise ValueError(f"data.height and data.width must be positive; got {height}x{width}")
    mean = _channels(norm_mean, IMAGENET_MEAN, "data.norm_mean")
    std = _channels(norm_std, IMAGENET_STD, "data.norm_std")
    eraser = RandomSizedErasing(at_size_position=erase_at_size_position) if "random_erase" in names else None
    train = SequenceTransform(height, width, mean, std, flip="random_flip" in names, eraser=eraser)
    test = SequenceTransform(height, width, mean, std)
    return train, test
