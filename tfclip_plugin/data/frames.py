"""Reading tracklet frames, with the ``tfclip.skip_bad_frames`` policy.

torchreid's ``read_image`` retries an unreadable file forever; here a missing, truncated or corrupt frame
raises :class:`BadFrameError` naming the file, or (``skip_bad_frames``) is replaced by the nearest readable
frame of the same tracklet with a warning, and counted in :attr:`FrameReader.replaced`.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence

from PIL import Image

_process_default: Optional[bool] = None


class BadFrameError(OSError):
    """A frame file that is missing or cannot be decoded."""


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


def open_frame(path: str) -> Image.Image:
    """The RGB image at ``path``; :class:`BadFrameError` naming the file if it is missing or unreadable."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as err:
        raise BadFrameError(f"frame listed by the dataset but absent on disk: {path}") from err
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

    def read(self, paths: Sequence[str], indices: Sequence[int]) -> List[Image.Image]:
        """The frames ``paths[i]`` for i in ``indices`` (each distinct frame decoded once; repeated indices
        share one image object)."""
        cache: Dict[int, Image.Image] = {}
        frames = []
        for index in indices:
            index = int(index)
            if index not in cache:
                cache[index] = self._read_one(paths, index)
            frames.append(cache[index])
        return frames

    def _read_one(self, paths: Sequence[str], index: int) -> Image.Image:
        try:
            return open_frame(paths[index])
        except BadFrameError as err:
            if not self.skip_bad_frames:
                raise BadFrameError(f"{err} (set tfclip.skip_bad_frames True to replace unreadable frames by a "
                                    f"neighbouring frame)") from err
            failure = err
        for neighbour in _neighbours(index, len(paths)):
            try:
                image = open_frame(paths[neighbour])
            except BadFrameError:
                continue
            bad = paths[index]
            if bad not in self.replaced:
                warnings.warn(f"{failure}; using {paths[neighbour]} instead (tfclip.skip_bad_frames)", stacklevel=2)
            self.replaced[bad] = self.replaced.get(bad, 0) + 1
            return image
        raise BadFrameError(f"no readable frame in the tracklet of {paths[index]} ({len(paths)} frames)") from failure


def _neighbours(index: int, length: int):
    """Frame indices by distance from ``index``: index-1, index+1, index-2, index+2, ..."""
    for step in range(1, length):
        for candidate in (index - step, index + step):
            if 0 <= candidate < length:
                yield candidate
