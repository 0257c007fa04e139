"""Sequence-consistent transforms (a tracklet's frames -> one uint8 clip (T, 3, H, W)) and the batched
normalisation that turns such clips into model input on the device.

TF-CLIP's training transform (AsuradaYuci/TF-CLIP ``datasets/make_dataloader_clipreid.py:130-134``,
``utils/seqtransforms.py``), in order: bilinear resize to (H, W), one horizontal-flip coin for the whole
sequence, the random sized eraser decided per frame (filled with one random RGB colour), ToTensor,
normalisation (ImageNet statistics by default, as the reference). The test transform is resize, ToTensor,
normalisation. Here the loader does everything up to ToTensor on uint8 pixels (Pillow's resize, only where the
stored size differs; flip and erasing on the stacked clip) and ships uint8 clips, a quarter of the float32
bytes; :class:`BatchNormaliser` does ToTensor's /255 and the normalisation on whole batches on the device, with
the same float32 operations in the same order, so the model sees the same values as with per-frame
ToTensor + Normalize.

Randomness comes from Python's ``random`` module (as the reference's ``SeqT`` classes), or from an explicit
``random.Random`` passed to the call; the draws (flip coin, then each frame's eraser) are those of the
per-frame Pillow implementation, so seeded runs are reproducible across both.
"""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from types import ModuleType
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .frames import pil_to_pixels, pixels_to_pil

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip.OPENAI_DATASET_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # open_clip.OPENAI_DATASET_STD

KNOWN_TRANSFORMS = ("random_flip", "random_erase")
CPU_CHUNK_ELEMENTS = 1 << 19  # CPU normalisation works through ~2 MB of float32 at a time (stays in cache)

try:
    import cv2 as _cv2  # torchreid's dependency: planes split and table look-ups on the CPU, where it is faster
except ImportError:
    _cv2 = None

RandomSource = Union[random.Random, ModuleType]  # a Random instance or the random module
Frame = Union[torch.Tensor, np.ndarray, Image.Image]  # uint8 (3, H, W) tensor, uint8 (H, W, 3) array, RGB image
Rectangle = Tuple[int, int, int, int, Tuple[int, int, int]]  # x, y, width, height, RGB colour


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

    def rectangle(self, width: int, height: int, rng: RandomSource) -> Optional[Rectangle]:
        """Draw the decision for one frame of ``width`` x ``height``: None (not erased) or (x, y, w, h, colour),
        the area to fill (it may extend past the frame; the fill is clipped)."""
        if rng.uniform(0.0, 1.0) > self.p:
            return None
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
        w, h = math.floor(x1 + box_w) - x1, math.floor(y1 + box_h) - y1
        colour = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        x, y = (w, h) if self.at_size_position else (x1, y1)
        return x, y, w, h, colour

    def erase_(self, pixels: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """Erase one uint8 frame (3, H, W) in place (or leave it); returns it."""
        box = self.rectangle(pixels.shape[2], pixels.shape[1], rng)
        if box is not None:
            x, y, w, h, colour = box
            pixels[:, y:y + h, x:x + w] = torch.tensor(colour, dtype=pixels.dtype).view(3, 1, 1)
        return pixels

    def __call__(self, frame: Image.Image, rng: RandomSource) -> Image.Image:
        """One RGB image -> an erased copy (or the image itself when not erased)."""
        box = self.rectangle(frame.size[0], frame.size[1], rng)
        if box is None:
            return frame
        x, y, w, h, colour = box
        erased = frame.copy()
        erased.paste(Image.new("RGB", (w, h), colour), (x, y))
        return erased


@dataclass(frozen=True)
class BatchNormaliser:
    """uint8 clips -> normalised float model input on a device: the one place where pixels become model input
    (phase 2 steps, evaluation, phase 1, torchreid's baseline engines).

    Computes ``x / 255``, ``- mean``, ``/ std`` in float32, in that order, as per-frame ToTensor + Normalize did,
    so the values equal theirs bit for bit on any device (the divisor 255 is a tensor: CUDA multiplies by the
    reciprocal of a Python-number divisor, 1 ulp off for half of the 256 values). On the CPU, float32 output from
    contiguous clips is looked up in the 3 x 256 values that computation gives (OpenCV's ``LUT``: one pass, 40 us
    per 256x128 frame against 54 for the four tensor passes); the output is contiguous either way.
    Floating-point input is taken as normalised already (by a per-image transform such as torchreid's) and only
    moved and cast.
    """

    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    _constants: Dict[object, tuple] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _channels(self.mean, IMAGENET_MEAN, "mean"))
        object.__setattr__(self, "std", _channels(self.std, IMAGENET_STD, "std"))

    def constants(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(255, mean (3, 1, 1), std (3, 1, 1)) float32 on ``device``."""
        if device not in self._constants:
            self._constants[device] = (
                torch.tensor(255.0, device=device),
                torch.tensor(self.mean, dtype=torch.float32, device=device).view(3, 1, 1),
                torch.tensor(self.std, dtype=torch.float32, device=device).view(3, 1, 1),
            )
        return self._constants[device]

    def tables(self) -> Tuple[np.ndarray, ...]:
        """The normalised value of each pixel value 0..255 per channel: three float32 (1, 256) arrays, computed by
        the arithmetic path itself."""
        if "tables" not in self._constants:
            pixels = torch.arange(256, dtype=torch.uint8).repeat(3).view(1, 3, 1, 256)
            values = self._arithmetic(pixels, torch.empty(pixels.shape), torch.device("cpu"))
            self._constants["tables"] = tuple(np.ascontiguousarray(values[0, c].numpy()) for c in range(3))
        return self._constants["tables"]

    def __call__(self, clips: torch.Tensor, device: Optional[Union[torch.device, str]] = None,
                 dtype: torch.dtype = torch.float32, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """uint8 (..., 3, H, W) on any device -> normalised ``dtype`` (..., 3, H, W) on ``device`` (default: the
        input's), written into ``out`` when given (same shape, ``dtype``, ``device``)."""
        device = clips.device if device is None else torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if clips.is_floating_point():
            return clips.to(device=device, dtype=dtype, non_blocking=True)
        if clips.dtype != torch.uint8 or clips.dim() < 3 or clips.shape[-3] != 3:
            raise ValueError(f"model input must be uint8 pixels (..., 3, H, W) or normalised floats; got "
                             f"{clips.dtype} {tuple(clips.shape)}")
        pixels = clips.to(device, non_blocking=True)
        if out is None:
            out = torch.empty(pixels.shape, dtype=dtype, device=device)
        elif out.shape != pixels.shape or out.dtype != dtype or out.device != device or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous {dtype} tensor of shape {tuple(pixels.shape)} on {device}; "
                             f"got {out.dtype} {tuple(out.shape)} on {out.device}")
        if device.type == "cpu" and dtype == torch.float32 and pixels.is_contiguous() and _cv2 is not None:
            return self._looked_up(pixels, out)
        return self._arithmetic(pixels, out, device)

    def _looked_up(self, pixels: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """CPU, contiguous uint8 -> float32 through :meth:`tables` with OpenCV's ``LUT``: one pass writing the
        floats, in chunks small enough that OpenCV keeps them on this thread."""
        planes = pixels.reshape(-1, 3, pixels.shape[-2] * pixels.shape[-1]).numpy()
        targets = out.view(planes.shape).numpy()
        step = max(1, CPU_CHUNK_ELEMENTS // 4 // max(1, planes.shape[2]))
        tables = self.tables()
        for start in range(0, len(planes), step):
            for channel, table in enumerate(tables):
                _cv2.LUT(planes[start:start + step, channel], table, dst=targets[start:start + step, channel])
        return out

    def _arithmetic(self, pixels: torch.Tensor, out: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``/ 255``, ``- mean``, ``/ std`` with float32 tensor operations (any device, any input layout); on the
        CPU in cache-sized chunks."""
        scale, mean, std = self.constants(device)
        frames = pixels.reshape(-1, *pixels.shape[-3:])
        targets = out.view(-1, *pixels.shape[-3:])
        step = max(1, CPU_CHUNK_ELEMENTS // max(1, frames[0].numel())) if device.type == "cpu" and len(frames) \
            else max(1, len(frames))
        for start in range(0, len(frames), step):
            source, target = frames[start:start + step], targets[start:start + step]
            floats = target if target.dtype == torch.float32 else torch.empty(source.shape, device=device)
            floats.copy_(source).div_(scale).sub_(mean).div_(std)
            if floats is not target:
                target.copy_(floats)
        return out

    def stream(self, device: Union[torch.device, str], dtype: torch.dtype = torch.float32) -> "NormalisedStream":
        """This normaliser's :class:`NormalisedStream` for ``device`` and ``dtype`` (one per pair, kept: on the CPU
        its buffer then serves every loop of the run, training steps, phase 1 and each evaluation alike)."""
        key = ("stream", torch.device(device), dtype)
        if key not in self._constants:
            self._constants[key] = NormalisedStream(self, torch.device(device), dtype)
        return self._constants[key]


class NormalisedStream:
    """:class:`BatchNormaliser` for loops (training steps, feature extraction) that are done with each batch
    before they ask for the next: on the CPU every batch is written into one buffer, kept between calls, so a
    batch is valid until the next call (a batch of 32 8-frame 256x128 clips is 100 MB of float32; glibc maps such
    blocks afresh on every allocation, and page-faulting them in cost about as much as decoding the JPEGs,
    benchmarks/RESULTS.md). On other devices (CUDA's caching allocator reuses memory) each call allocates. Call
    with uint8 or float clips."""

    def __init__(self, normaliser: BatchNormaliser, device: torch.device, dtype: torch.dtype) -> None:
        self.normaliser, self.device, self.dtype = normaliser, device, dtype
        self.buffer: Optional[torch.Tensor] = None

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cpu" or clips.dtype != torch.uint8:
            return self.normaliser(clips, self.device, self.dtype)
        if self.buffer is None or self.buffer.shape[1:] != clips.shape[1:] or len(self.buffer) < len(clips):
            self.buffer = torch.empty(clips.shape, dtype=self.dtype)
        return self.normaliser(clips, self.device, self.dtype, out=self.buffer[:len(clips)])


def channel_first(frames: Sequence[torch.Tensor]) -> np.ndarray:
    """uint8 frames (3, H, W), as the decoders return them (channel-last memory) -> one contiguous uint8 array
    (T, 3, H, W). OpenCV's ``split`` writes each frame's planes straight into the array (about 8 us per 256x128
    frame; numpy's transposing copy takes 29, torch's 65), numpy copies what OpenCV cannot take."""
    height, width = frames[0].shape[1:]
    out = np.empty((len(frames), 3, height, width), dtype=np.uint8)
    for planes, frame in zip(out, frames):
        pixels = frame.permute(1, 2, 0).numpy()
        if _cv2 is not None and pixels.flags.c_contiguous:
            _cv2.split(pixels, list(planes))
        else:
            planes[...] = pixels.transpose(2, 0, 1)
    return out


def normaliser_of(transform: object) -> BatchNormaliser:
    """The :class:`BatchNormaliser` of a transform's uint8 output: its ``normaliser`` (:class:`SequenceTransform`,
    ``image_transforms.ImageTransform``); for another transform (torchreid's per-image ones return normalised
    floats, which pass through a normaliser unchanged), ImageNet statistics."""
    normaliser = getattr(transform, "normaliser", None)
    if isinstance(normaliser, BatchNormaliser):
        return normaliser
    return shared_normaliser(IMAGENET_MEAN, IMAGENET_STD)


@dataclass(frozen=True)
class SequenceTransform:
    """Frames -> contiguous uint8 clip (T, 3, H, W) (or (3, H, W) for one frame); :attr:`normaliser` turns
    batches of them into the model's input.

    Frames: uint8 tensors (3, H', W') as :class:`~tfclip_plugin.data.frames.FrameReader` returns them, Pillow
    images, or uint8 arrays (H', W', 3).

    Args:
        height, width: output size (Pillow's bilinear resize; frames of that size are left as they are).
        flip: one horizontal-flip coin (p = 0.5) for the whole sequence.
        eraser: per-frame random sized erasing, or None.
        mean, std: per-channel normalisation of the [0, 1] pixels (applied by :attr:`normaliser`).
    """

    height: int
    width: int
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    flip: bool = False
    eraser: Optional[RandomSizedErasing] = None

    def __call__(self, frames: Union[Sequence[Frame], Frame], rng: Optional[RandomSource] = None) -> torch.Tensor:
        if isinstance(frames, Image.Image) or (isinstance(frames, (torch.Tensor, np.ndarray)) and frames.ndim == 3):
            return self([frames], rng)[0]
        if len(frames) == 0:
            raise ValueError("SequenceTransform needs at least one frame")
        rng = random if rng is None else rng
        flip = self.flip and rng.random() < 0.5
        clip = channel_first([self.pixels(frame) for frame in frames])
        if flip:
            clip = np.ascontiguousarray(clip[..., ::-1])
        clip = torch.from_numpy(clip)
        if self.eraser is not None:
            for frame in clip:
                self.eraser.erase_(frame, rng)
        return clip

    def pixels(self, frame: Frame) -> torch.Tensor:
        """One frame as uint8 (3, height, width): Pillow's bilinear resize where its size differs."""
        if isinstance(frame, Image.Image):
            if frame.mode != "RGB":
                frame = frame.convert("RGB")
            if frame.size != (self.width, self.height):
                frame = frame.resize((self.width, self.height), Image.Resampling.BILINEAR)
            return pil_to_pixels(frame)
        if isinstance(frame, np.ndarray):  # np.require: np.asarray(image) is read-only
            frame = torch.from_numpy(np.require(frame, requirements="W")).permute(2, 0, 1)
        pixels = frame
        if pixels.dtype != torch.uint8 or pixels.dim() != 3 or pixels.shape[0] != 3:
            raise ValueError(f"a frame must be uint8 (3, H, W) pixels, an (H, W, 3) uint8 array or an image; got "
                             f"{pixels.dtype} {tuple(pixels.shape)}")
        if tuple(pixels.shape[1:]) == (self.height, self.width):
            return pixels
        return self.pixels(pixels_to_pil(pixels))

    @property
    def normaliser(self) -> BatchNormaliser:
        """The batched normalisation of this transform's clips (``mean``, ``std``; :func:`shared_normaliser`)."""
        return shared_normaliser(self.mean, self.std)


def _channels(values: Optional[Sequence[float]], default: Tuple[float, float, float], name: str):
    if values is None:
        return default
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (R, G, B); got {list(values)}")
    return values


def transform_settings(
    height: int,
    width: int,
    transforms: Union[str, Sequence[str], None],
    known: Sequence[str],
    norm_mean: Optional[Sequence[float]] = None,
    norm_std: Optional[Sequence[float]] = None,
    data_kind: str = "",
) -> Tuple[List[str], Tuple[float, float, float], Tuple[float, float, float]]:
    """(lower-case ``data.transforms`` names, mean, std) after checking the names against ``known``, the size and
    the statistics (None -> ImageNet's); ``data_kind`` ('image data') names the data in the unknown-name error."""
    names = [transforms] if isinstance(transforms, str) else list(transforms or [])
    names = [name.lower() for name in names]
    unknown = [name for name in names if name not in known]
    if unknown:
        where = f" for {data_kind}" if data_kind else ""
        raise ValueError(f"unknown transform(s) {unknown} in data.transforms{where}; known: {', '.join(known)}")
    if height < 1 or width < 1:
        raise ValueError(f"data.height and data.width must be positive; got {height}x{width}")
    return names, _channels(norm_mean, IMAGENET_MEAN, "data.norm_mean"), _channels(norm_std, IMAGENET_STD,
                                                                                    "data.norm_std")


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
    names, mean, std = transform_settings(height, width, transforms, KNOWN_TRANSFORMS, norm_mean, norm_std)
    eraser = RandomSizedErasing(at_size_position=erase_at_size_position) if "random_erase" in names else None
    train = SequenceTransform(height, width, mean, std, flip="random_flip" in names, eraser=eraser)
    test = SequenceTransform(height, width, mean, std)
    return train, test


def build_normaliser(norm_mean: Optional[Sequence[float]], norm_std: Optional[Sequence[float]]) -> BatchNormaliser:
    """The :class:`BatchNormaliser` for ``data.norm_mean`` / ``data.norm_std`` (None -> ImageNet statistics;
    :func:`shared_normaliser`)."""
    return shared_normaliser(_channels(norm_mean, IMAGENET_MEAN, "data.norm_mean"),
                             _channels(norm_std, IMAGENET_STD, "data.norm_std"))


@functools.lru_cache(maxsize=None)
def shared_normaliser(mean: Tuple[float, float, float], std: Tuple[float, float, float]) -> BatchNormaliser:
    """One :class:`BatchNormaliser` per statistics in the process, so that the engine's loops, phase 1 and the
    transforms' users share its streams' CPU buffers (a normalised batch is valid until the next stream call)."""
    return BatchNormaliser(mean, std)
