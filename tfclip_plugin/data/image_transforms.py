"""Per-image transforms of image ReID (``data.type image``): CLIP-ReID's recipe, selected by ``data.transforms``.

CLIP-ReID's training transform (Syliz517/CLIP-ReID ``datasets/make_dataloader_clipreid.py:43-52``) is, in order,
Resize(H, W, bicubic) -> RandomHorizontalFlip(0.5) -> Pad(10, zeros) -> RandomCrop(H, W) -> ToTensor ->
Normalize -> timm's ``RandomErasing(probability=0.5, mode='pixel', max_count=1)``; its test transform
(``:54-58``) is Resize(H, W, bilinear) -> ToTensor -> Normalize. Each training step has a name:

===================== ==================================================================================
``resize_bicubic``    the training resize is bicubic (without it bilinear, like the test resize)
``random_flip``       horizontal flip with probability 0.5
``pad_crop``          10 pixels of zero padding on every side, then a random (H, W) crop
``random_erase``      TF-CLIP's random sized eraser of the video path (one random RGB colour, p 0.5)
``random_erase_pixel`` timm's pixel-mode random erasing (:class:`PixelErasing`), in normalised space
===================== ==================================================================================

The steps run in the order above whatever the order of the names. The transform has two stages:
:meth:`ImageTransform.pixels` (image -> uint8 (3, H, W): resize, flip, pad and crop, colour eraser) and
:meth:`ImageTransform.from_pixels` (uint8 -> normalised float32, then the pixel eraser, which needs normalised
values; it takes one image (3, H, W) or a batch (N, 3, H, W)). Loaders ship :meth:`ImageTransform.loader_output`:
the uint8 pixels, normalised in batches on the device by the engine's ``BatchNormaliser`` (the same float32
values as :meth:`~ImageTransform.from_pixels`), except with the pixel eraser, whose random draws (Python's
``random`` for the decision, the torch generator for the noise) interleave per image with those of the uint8
stage: such a transform ships the erased float32 image from the loader, so seeded runs draw exactly what they
drew before (erasing the batch on the device afterwards would reorder the draws, and in the main process instead
of the loader's workers).

Randomness comes from where the reference's transforms take it: flip, crop and the eraser's N(0, 1) fill from a
torch generator (torchvision's and timm's use torch's default one), the erasing decisions from Python's
``random`` (timm's). Pass ``rng`` (a ``random.Random``) and ``generator`` (a ``torch.Generator``) for seeded
draws; with the same seeds the output equals torchvision + timm's bit for bit.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from PIL import Image, ImageOps

from .frames import pil_to_pixels, pixels_to_pil
from .transforms import (IMAGENET_MEAN, IMAGENET_STD, BatchNormaliser, RandomSizedErasing, RandomSource,
                         shared_normaliser, transform_settings)

IMAGE_TRANSFORMS = ("resize_bicubic", "random_flip", "pad_crop", "random_erase", "random_erase_pixel")
CLIPREID_PADDING = 10  # CLIP-ReID configs/person/vit_clipreid.yml INPUT.PADDING
RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

Box = Tuple[int, int, int, int]  # top, left, height, width


@dataclass(frozen=True)
class PixelErasing:
    """timm's ``RandomErasing(probability, mode='pixel', max_count=1)`` (timm ``data/random_erasing.py``).

    With probability ``probability`` one rectangle of a normalised image is replaced by per-pixel N(0, 1) noise:
    up to ``attempts`` draws of an area fraction U[min_area, max_area] and a log-uniform aspect ratio
    (height / width) in [min_aspect, max_aspect]; height and width are rounded (Python's ``round``), the first
    draw strictly inside the image is placed at a uniform integer position; if none fits, nothing is erased.
    """

    probability: float = 0.5
    min_area: float = 0.02
    max_area: float = 1 / 3
    min_aspect: float = 0.3
    max_aspect: float = 1 / 0.3
    attempts: int = 10

    def rectangle(self, height: int, width: int, rng: RandomSource) -> Optional[Box]:
        """The decision for one image of ``height`` x ``width``: None, or (top, left, h, w)."""
        if rng.random() > self.probability:
            return None
        area = height * width
        log_aspect = (math.log(self.min_aspect), math.log(self.max_aspect))
        for _ in range(self.attempts):
            target = rng.uniform(self.min_area, self.max_area) * area
            aspect = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < width and h < height:
                return rng.randint(0, height - h), rng.randint(0, width - w), h, w
        return None

    def __call__(self, images: torch.Tensor, rng: Optional[RandomSource] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Erase normalised float images (3, H, W) or (N, 3, H, W) in place, one decision per image; returns
        them. The noise is drawn on the CPU from ``generator`` (None: torch's default) and moved to their device."""
        rng = random if rng is None else rng
        for image in images if images.dim() == 4 else images[None]:
            box = self.rectangle(image.shape[1], image.shape[2], rng)
            if box is not None:
                top, left, h, w = box
                noise = torch.empty((image.shape[0], h, w), dtype=image.dtype).normal_(generator=generator)
                image[:, top:top + h, left:left + w] = noise.to(image.device)
        return images


@dataclass(frozen=True)
class ImageTransform:
    """An image (PIL, or uint8 (3, H', W') pixels as ``frames.read_frame`` decodes them) -> normalised float32
    (3, height, width); :meth:`loader_output` is what loaders ship.

    Args:
        height, width: output size.
        mean, std: per-channel normalisation of the [0, 1] pixels.
        resample: 'bilinear' or 'bicubic' (Pillow's resize; an image of the output size is left as it is).
        flip: horizontal flip with probability 0.5.
        padding: pixels of zero padding before a random (height, width) crop; 0 = no padding and no crop.
        eraser: TF-CLIP's random sized eraser (on the uint8 pixels), or None.
        pixel_eraser: timm's pixel-mode erasing (on the normalised values), or None.
    """

    height: int
    width: int
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    resample: str = "bilinear"
    flip: bool = False
    padding: int = 0
    eraser: Optional[RandomSizedErasing] = None
    pixel_eraser: Optional[PixelErasing] = None

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLING:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLING)}; got {self.resample!r}")
        if self.height < 1 or self.width < 1 or self.padding < 0:
            raise ValueError(f"need a positive size and padding >= 0; got {self.height}x{self.width}, "
                             f"padding {self.padding}")

    def __call__(self, image: Image.Image, rng: Optional[RandomSource] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.from_pixels(self.pixels(image, rng, generator), rng, generator)

    def loader_output(self, image: Union[Image.Image, torch.Tensor], rng: Optional[RandomSource] = None,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """What a loader ships for ``image``: the uint8 pixels (3, height, width) (:attr:`normaliser` makes them
        model input), or with a pixel eraser the normalised, erased float32 image (``self(image)``), so that its
        draws stay in each image's place in the sequence of random draws."""
        if self.pixel_eraser is not None:
            return self(image, rng, generator)
        return self.pixels(image, rng, generator)

    @property
    def normaliser(self) -> BatchNormaliser:
        """The batched normalisation of this transform's uint8 output (``mean``, ``std``)."""
        return shared_normaliser(self.mean, self.std)

    def pixels(self, image: Union[Image.Image, torch.Tensor], rng: Optional[RandomSource] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The uint8 stage: resize, flip, pad and crop, colour eraser -> contiguous uint8 (3, height, width).
        ``image``: a PIL image or uint8 pixels (3, H', W') (taken as they are when no step changes them)."""
        rng = random if rng is None else rng
        if isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"an image must be uint8 (3, H, W) pixels or a PIL image; got {image.dtype} "
                                 f"{tuple(image.shape)}")
            plain = not self.flip and not self.padding and self.eraser is None
            if plain and tuple(image.shape[1:]) == (self.height, self.width):
                return image.contiguous()
            image = pixels_to_pil(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), RESAMPLING[self.resample])
        if self.flip and torch.rand(1, generator=generator).item() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.padding:
            image = ImageOps.expand(image, border=self.padding, fill=0)
            top = int(torch.randint(0, 2 * self.padding + 1, (1,), generator=generator))
            left = int(torch.randint(0, 2 * self.padding + 1, (1,), generator=generator))
            image = image.crop((left, top, left + self.width, top + self.height))
        if self.eraser is not None:
            image = self.eraser(image, rng)
        return pil_to_pixels(image).contiguous()

    def from_pixels(self, pixels: torch.Tensor, rng: Optional[RandomSource] = None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The float stage: uint8 (3, H, W) or (N, 3, H, W) -> normalised float32, then the pixel eraser."""
        values = self.normaliser(pixels)
        if self.pixel_eraser is not None:
            self.pixel_eraser(values, rng, generator)
        return values


def frame_output(transform, pixels: torch.Tensor) -> torch.Tensor:
    """One decoded frame (uint8 (3, H, W)) through a per-image transform: an :class:`ImageTransform`'s
    :meth:`~ImageTransform.loader_output`, or any other transform's output on the Pillow image (torchreid's
    ``Compose``: normalised float32)."""
    if isinstance(transform, ImageTransform):
        return transform.loader_output(pixels)
    return transform(pixels_to_pil(pixels))


def build_image_transforms(
    height: int,
    width: int,
    transforms: Union[str, Sequence[str], None],
    norm_mean: Optional[Sequence[float]] = None,
    norm_std: Optional[Sequence[float]] = None,
    erase_at_size_position: bool = False,
) -> Tuple[ImageTransform, ImageTransform]:
    """(train, test) image transforms for ``data.transforms`` names (:data:`IMAGE_TRANSFORMS`).

    ``norm_mean``/``norm_std`` None -> ImageNet statistics. The test transform is the bilinear resize and the
    normalisation. ``erase_at_size_position`` = ``tfclip.erase_at_size_position`` (``random_erase`` only).
    """
    names, mean, std = transform_settings(height, width, transforms, IMAGE_TRANSFORMS, norm_mean, norm_std,
                                          data_kind="image data")
    train = ImageTransform(
        height, width, mean, std,
        resample="bicubic" if "resize_bicubic" in names else "bilinear",
        flip="random_flip" in names,
        padding=CLIPREID_PADDING if "pad_crop" in names else 0,
        eraser=RandomSizedErasing(at_size_position=erase_at_size_position) if "random_erase" in names else None,
        pixel_eraser=PixelErasing() if "random_erase_pixel" in names else None,
    )
    return train, ImageTransform(height, width, mean, std)
