"""Checks of a dataset's on-disk layout, with errors that name the expected path."""
from __future__ import annotations

import os
import os.path as osp
from typing import Iterable, Tuple

LAYOUT_DOC = "docs/datasets.md"
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class DatasetLayoutError(FileNotFoundError):
    """A file or folder of a dataset's layout is missing or malformed."""


def require_paths(dataset: str, paths: Iterable[str]) -> None:
    """Raise :class:`DatasetLayoutError` naming the first of ``paths`` that does not exist."""
    for path in paths:
        if not osp.exists(path):
            raise DatasetLayoutError(f'{dataset}: expected "{path}", which does not exist '
                                     f"(the layouts under --root are described in {LAYOUT_DOC})")


def sorted_frames(folder: str, extensions: Tuple[str, ...] = FRAME_EXTENSIONS) -> Tuple[str, ...]:
    """The image files of ``folder``, sorted by name (= temporal order for zero-padded frame numbers)."""
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(extensions))
    return tuple(osp.join(folder, name) for name in names)


def person_frames(dataset: str, folder: str, extensions: Tuple[str, ...] = FRAME_EXTENSIONS) -> Tuple[str, ...]:
    """:func:`sorted_frames` of a tracklet folder; :class:`DatasetLayoutError` if it is missing or holds
    no frame."""
    require_paths(dataset, [folder])
    frames = sorted_frames(folder, extensions)
    if not frames:
        raise DatasetLayoutError(f'{dataset}: no {"/".join(extensions)} frames in "{folder}"')
    return frames
