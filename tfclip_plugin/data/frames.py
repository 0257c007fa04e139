"""Reading tracklet frames as uint8 pixels, with the ``tfclip.skip_bad_frames`` policy.

A frame is decoded once into a uint8 tensor (3, H, W), RGB. JPEG files go through torchvision's libjpeg-turbo
decoder (``torchvision.io.decode_jpeg`` on the CPU), which gives Pillow's pixels exactly and is faster
(benchmarks/RESULTS.md, "decoders"); other formats (PNG, ...) and JPEGs that are not 3-channel (grey, CMYK: there
Pillow's conversion to RGB is the rule) go through Pillow's ``Image.open(...).convert('RGB')``, as does everything
where torchvision's image extension is missing.

torchreid's ``read_image`` retries an unreadable file forever; here a missing, truncated or corrupt frame
raises :class:`BadFrameError` naming the file, or (``skip_bad_frames``) is replaced by the nearest readable
frame of the same tracklet with a warning, and counted in :attr:`FrameReader.replaced`.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

JPEG_SIGNATURE = b"\xff\xd8\xff"

_process_default: Optional[bool] = None


class BadFrameError(OSError):
    """A frame file that is missing or cannot be decoded."""


def _torchvision_jpeg_decoder() -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """torchvision's CPU JPEG decoder (encoded bytes (N,) uint8 -> (C, H, W) uint8), or None without torchvision's
    image extension. The operator itself when it answers as ``torchvision.io.decode_jpeg`` does on a probe image:
    torchvision 0.29 deprecates its codecs (for TorchCodec) and its Python wrapper logs and warns on every call,
    about 30 us per frame; otherwise the wrapper, with that warning silenced."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg, image
    except ImportError:
        return None
    has_ops = getattr(image, "_has_image_ops", None)
    if has_ops is not None and not has_ops():
        return None
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning, module="torchvision")
    probe = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 30, 90)).save(probe, "JPEG")
    probe = torch.frombuffer(bytearray(probe.getvalue()), dtype=torch.uint8)
    unchanged = ImageReadMode.UNCHANGED.value
    try:
        operator = torch.ops.image.decode_jpeg
        if torch.equal(operator(probe, unchanged, False), decode_jpeg(probe)):
            return lambda data: operator(data, unchanged, False)
    except (AttributeError, RuntimeError, TypeError):
        pass
    return decode_jpeg


_decode_jpeg = _torchvision_jpeg_decoder()


def set_default_skip_bad_frames(skip: Optional[bool]) -> None:
    """The policy of readers built without an explicit one (``build_datamanager`` sets it from the config,
    so the engine's dense test and memory datasets follow ``tfclip.skip_bad_frames``); None = the active
    config's value."""
    global _process_default
    _process_default = skip


def default_skip_bad_frames() -> bool:
    """The policy set by :func:`set_default_skip_bad_frames`, else ``config.active_config()``'s."""
    if _process_default is not None:
        return _process_default
    from ..config import active_config

    return bool(active_config().tfclip.skip_bad_frames)


def pil_to_pixels(image: Image.Image) -> torch.Tensor:
    """A Pillow image -> uint8 (3, H, W) RGB (a channel-last view of an (H, W, 3) copy)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def pixels_to_pil(pixels: torch.Tensor) -> Image.Image:
    """uint8 (3, H, W) -> an RGB Pillow image (for per-image transforms and Pillow's resize)."""
    return Image.fromarray(np.ascontiguousarray(pixels.permute(1, 2, 0).numpy()), "RGB")


def read_frame(path: str) -> torch.Tensor:
    """The RGB pixels of the image at ``path``: uint8 (3, H, W) (a channel-last view as the decoders return it).
    :class:`BadFrameError` naming the file if it is missing or cannot be decoded."""
    try:
        with open(path, "rb", buffering=0) as f:
            data = bytearray(os.fstat(f.fileno()).st_size)
            del data[f.readinto(data):]
    except FileNotFoundError as err:
        raise BadFrameError(f"frame listed by the dataset but absent on disk: {path}") from err
    except OSError as err:
        raise BadFrameError(f"cannot read frame {path}: {err}") from err
    if _decode_jpeg is not None and data[:3] == JPEG_SIGNATURE:
        try:
            pixels = _decode_jpeg(torch.frombuffer(data, dtype=torch.uint8))
        except RuntimeError as err:  # torchvision's message ends with libjpeg's reason after the source location
            raise BadFrameError(f"cannot read frame {path}: {str(err).rsplit(', ', 1)[-1]}") from err
        if pixels.shape[0] == 3:
            return pixels
    try:
        with Image.open(io.BytesIO(data)) as image:
            return pil_to_pixels(image)
    except (OSError, ValueError, SyntaxError) as err:
        raise BadFrameError(f"cannot read frame {path}: {err}") from err


class FrameReader:
    """Loads the frames of a tracklet by index.

    Args:
        skip_bad_frames: replace an unreadable frame by the nearest readable one of the same tracklet
            (warning once per file, count in ``replaced``) instead of raising :class:`BadFrameError`.
            None = :func:`default_skip_bad_frames`.

    ``replaced`` maps each replaced file to how often it was replaced; with DataLoader workers each worker
    process keeps its own counts (the warnings reach the console from every process).
    """

    def __init__(self, skip_bad_frames: Optional[bool] = None) -> None:
        self.skip_bad_frames = default_skip_bad_frames() if skip_bad_frames is None else bool(skip_bad_frames)
        self.replaced: Dict[str, int] = {}

    @property
    def num_replaced(self) -> int:
        """How many frame reads were served by a neighbouring frame."""
        return sum(self.replaced.values())

    def read(self, paths: Sequence[str], indices: Sequence[int]) -> List[torch.Tensor]:
        """The frames ``paths[i]`` for i in ``indices``, uint8 (3, H, W) each (each distinct frame decoded once;
        repeated indices share one tensor)."""
        cache: Dict[int, torch.Tensor] = {}
        frames = []
        for index in indices:
            index = int(index)
            if index not in cache:
                cache[index] = self._read_one(paths, index)
            frames.append(cache[index])
        return frames

    def _read_one(self, paths: Sequence[str], index: int) -> torch.Tensor:
        try:
            return read_frame(paths[index])
        except BadFrameError as err:
            if not self.skip_bad_frames:
                raise BadFrameError(f"{err} (set tfclip.skip_bad_frames True to replace unreadable frames by a "
                                    f"neighbouring frame)") from err
            failure = err
        for neighbour in _neighbours(index, len(paths)):
            try:
                pixels = read_frame(paths[neighbour])
            except BadFrameError:
                continue
            bad = paths[index]
            if bad not in self.replaced:
                warnings.warn(f"{failure}; using {paths[neighbour]} instead (tfclip.skip_bad_frames)", stacklevel=2)
            self.replaced[bad] = self.replaced.get(bad, 0) + 1
            return pixels
        raise BadFrameError(f"no readable frame in the tracklet of {paths[index]} ({len(paths)} frames)") from failure


def _neighbours(index: int, length: int):
    """Frame indices by distance from ``index``: index-1, index+1, index-2, index+2, ..."""
    for step in range(1, length):
        for candidate in (index - step, index + step):
            if 0 <= candidate < length:
                yield candidate
