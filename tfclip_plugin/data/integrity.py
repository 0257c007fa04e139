"""Checks that a dataset's frames are there and readable, before a run depends on them.

- :func:`check_listed_frames` runs when a dataset is parsed (``TrackletSamplingMixin``): every frame the splits
  list must exist. Existence is read from one directory listing per frame folder (``os.scandir``), not one
  ``stat`` per frame; all missing frames are reported at once, with counts per split and the first paths.
  A dataset whose lists were checked once in the process is not checked again (torchreid's data manager
  parses each dataset once per split).
- :func:`check_dataset_frames` (``tfclip-reid check-data``) decodes every frame in parallel with a progress
  bar, with the loaders' decoder (:func:`~.frames.read_frame`), and lists the unreadable ones.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from .datasets.layout import DatasetLayoutError
from .frames import BadFrameError, read_frame

SHOWN_PATHS = 5
_UNLISTED = object()
_checked: Set[tuple] = set()
_enabled = True


class MissingFramesError(DatasetLayoutError):
    """Frames listed by a dataset's split files that do not exist."""


@contextlib.contextmanager
def existence_check_disabled() -> Iterator[None]:
    """Parse datasets without :func:`check_listed_frames` inside the block (``check-data`` reports missing
    frames itself)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def split_paths(tracklets: Sequence[tuple]) -> List[str]:
    """The distinct frame paths of torchreid tuples ``(img_paths, pid, camid, ...)``, in first-seen order."""
    return list(dict.fromkeys(path for item in tracklets for path in item[0]))


def missing_paths(paths: Iterable[str], listings: Optional[Dict[str, object]] = None) -> List[str]:
    """The ``paths`` that do not exist, each once, in the order given: one ``os.scandir`` per distinct folder
    (a missing folder makes all of its paths missing). ``listings`` (folder -> names) carries the folders already
    listed from one call to the next (splits that share folders, as MARS's query and gallery do)."""
    listings = {} if listings is None else listings
    missing = []
    for path in paths:
        folder, _, name = path.rpartition(os.sep)
        names = listings.get(folder, _UNLISTED)
        if names is _UNLISTED:
            names = listings[folder] = _listing(folder)
        if names is None or name not in names:
            missing.append(path)
    return list(dict.fromkeys(missing))


def _listing(folder: str) -> Optional[Set[str]]:
    try:
        with os.scandir(folder or ".") as entries:
            return {entry.name for entry in entries}
    except (FileNotFoundError, NotADirectoryError):
        return None


def _key(splits: Dict[str, Sequence[tuple]]) -> tuple:
    return tuple((name, len(items), items[0][0][0] if items else "", items[-1][0][-1] if items else "")
                 for name, items in splits.items())


def check_listed_frames(dataset: str, splits: Dict[str, Sequence[tuple]], warn_only: bool = False) -> None:
    """Raise :class:`MissingFramesError` when frames listed in ``splits`` ({'train': tuples, 'query': ...}) do
    not exist; the message has the count per split and the first paths. ``warn_only`` (``tfclip.skip_bad_frames``,
    which replaces unreadable frames by neighbours) makes it a warning. Checked once per process and lists."""
    if not _enabled:
        return
    key = _key(splits)
    if key in _checked:
        return
    listings: Dict[str, object] = {}
    missing = {name: missing_paths((path for item in items for path in item[0]), listings)
               for name, items in splits.items()}
    missing = {name: paths for name, paths in missing.items() if paths}
    if missing:
        total = sum(len(paths) for paths in missing.values())
        counts = ", ".join(f"{name} {len(paths)}" for name, paths in missing.items())
        first = [path for paths in missing.values() for path in paths][:SHOWN_PATHS]
        message = (f"{dataset}: {total} listed frame{'s' if total > 1 else ''} missing on disk ({counts}); first: "
                   + ", ".join(first) + ". The dataset is incomplete: copy or extract it again "
                   "(`tfclip-reid check-data` also decodes every frame)")
        if not warn_only:
            raise MissingFramesError(message)
        warnings.warn(f"{message}; tfclip.skip_bad_frames: each is replaced by a neighbouring frame", stacklevel=2)
    _checked.add(key)


# -------------------------------------------------------------------------------------------- check-data
def _decode(paths: Sequence[str]) -> List[Tuple[str, str]]:
    failures = []
    for path in paths:
        try:
            read_frame(path)
        except BadFrameError as err:
            failures.append((path, str(err)))
    return failures


def _chunks(paths: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(paths), size):
        yield paths[start:start + size]


def decode_frames(paths: Sequence[str], workers: int = 0, chunk: int = 64, desc: str = "frames"
                  ) -> List[Tuple[str, str]]:
    """Decode every path in ``workers`` processes (0: one per CPU core; 1: in this process) with a tqdm bar;
    returns [(path, reason)] of the unreadable ones, in path order."""
    from tqdm import tqdm

    workers = workers or os.cpu_count() or 1
    failures: List[Tuple[str, str]] = []
    with tqdm(total=len(paths), desc=desc, unit="frame") as bar:
        if workers == 1:
            for part in _chunks(paths, chunk):
                failures += _decode(part)
                bar.update(len(part))
        else:
            with ProcessPoolExecutor(workers) as pool:
                parts = list(_chunks(paths, chunk))
                for part, found in zip(parts, pool.map(_decode, parts)):
                    failures += found
                    bar.update(len(part))
    return failures


def _unused(frames):
    return frames


def dataset_splits(name: str, root: str, split_id: int = 0) -> Dict[str, Sequence[tuple]]:
    """{'train', 'query', 'gallery'} tuples of a registered video dataset, parsed without the existence check."""
    from .. import host

    registry = host.video_dataset_registry()
    if name not in registry:
        raise ValueError(f"unknown video dataset '{name}'; available: {', '.join(sorted(registry))}")
    with existence_check_disabled():
        dataset = registry[name](root=root, split_id=split_id, mode="train", verbose=False, transform=_unused)
    return {"train": dataset.train, "query": dataset.query, "gallery": dataset.gallery}


def check_dataset_frames(names: Sequence[str], root: str, workers: int = 0, split_id: int = 0
                         ) -> List[Tuple[str, str]]:
    """``tfclip-reid check-data``: decode every distinct frame of each dataset (all splits), print a summary and
    every unreadable frame with its reason; returns [(path, reason)]."""
    unreadable: List[Tuple[str, str]] = []
    for name in names:
        splits = dataset_splits(name, root, split_id)
        paths = list(dict.fromkeys(path for items in splits.values() for path in split_paths(items)))
        started = time.time()
        failures = decode_frames(paths, workers, desc=name)
        print(f"{name}: {len(paths)} frames decoded in {time.time() - started:.1f} s, {len(failures)} unreadable")
        for path, reason in failures:
            print(f"  {reason}")
        unreadable += failures
    return unreadable
