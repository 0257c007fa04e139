"""Tracklet frames read from disk for the figures (Pillow)."""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

MISSING_FRAME_COLOUR = (150, 150, 150)


class FrameCache:
    """Frames read once and resized to (width, height); missing files become grey and are listed."""

    def __init__(self, width: int, height: int):
        self.size = (width, height)
        self.frames: Dict[str, Image.Image] = {}
        self.missing: List[str] = []

    def get(self, path: str) -> Image.Image:
        if path not in self.frames:
            if path and os.path.isfile(path):
                with Image.open(path) as image:
                    self.frames[path] = image.convert("RGB").resize(self.size, Image.BILINEAR)
            else:
                self.missing.append(path)
                self.frames[path] = Image.new("RGB", self.size, MISSING_FRAME_COLOUR)
        return self.frames[path]


def pick_frames(frames: Sequence[str], count: int) -> List[str]:
    """``count`` evenly spaced entries of ``frames`` (repeating when there are fewer)."""
    positions = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in positions]


def identity_strip(
    frames: Sequence[str], colours: Sequence[Tuple[int, int, int]], frame_size: Tuple[int, int] = (64, 32),
    border: int = 3, gap: int = 2,
) -> Tuple[Image.Image, List[str]]:
    """One frame per identity side by side, each framed in its identity's colour.

    Returns the strip, (height + 2 border) x (n (width + 2 border) + (n - 1) gap), and the paths
    that were missing (drawn grey).
    """
    height, width = frame_size
    cache = FrameCache(width, height)
    cell = width + 2 * border
    strip = Image.new("RGB", (len(frames) * cell + (len(frames) - 1) * gap, height + 2 * border), (255, 255, 255))
    for i, (path, colour) in enumerate(zip(frames, colours)):
        x = i * (cell + gap)
        strip.paste(tuple(colour), (x, 0, x + cell, height + 2 * border))
        strip.paste(cache.get(path), (x + border, border))
    return strip, cache.missing
