"""LS-VID (Li et al., ICCV 2019), absent from torchreid; parsed as the reference does (AsuradaYuci/TF-CLIP ``datasets/set/lsvid.py``).

Layout (docs/datasets.md), under ``<root>/LS-VID`` (or ``<root>/lsvid``):
``list_sequence/list_seq_train.txt``, ``list_sequence/list_seq_test.txt`` and ``test/data/info_test.mat``,
or the reference's extra level ``info/list_sequence/...`` and ``info/data/info_test.mat``. Each list line is
``<tracklet prefix> <pid>``; a tracklet's frames are the image files whose path starts with
``<dataset folder>/<prefix>``, sorted by name. ``info_test.mat`` is MATLAB v7.3 (HDF5): its ``query`` vector
holds the 1-based list rows of the query tracklets; the other test rows form the gallery.
"""
from __future__ import annotations

import bisect
import functools
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ... import host
from ..sampling import subtracklet_bounds
from ..video import TrackletSamplingMixin
from .layout import FRAME_EXTENSIONS, DatasetLayoutError, require_paths

NAME = "LSVID"
FOLDERS = ("LS-VID", "lsvid")
LAYOUTS = (
    ("list_sequence", osp.join("test", "data", "info_test.mat")),
    (osp.join("info", "list_sequence"), osp.join("info", "data", "info_test.mat")),
)
NUM_CAMERAS = 15

Tracklet = Tuple[Tuple[str, ...], int, int]


def find_layout(dataset_dir: str) -> Tuple[str, str, str]:
    """(train list, test list, info_test.mat) of whichever layout holds ``list_seq_train.txt``."""
    for lists, info in LAYOUTS:
        train = osp.join(dataset_dir, lists, "list_seq_train.txt")
        if osp.exists(train):
            paths = (train, osp.join(dataset_dir, lists, "list_seq_test.txt"), osp.join(dataset_dir, info))
            require_paths(NAME, paths)
            return paths
    expected = " or ".join(f'"{osp.join(dataset_dir, lists, "list_seq_train.txt")}"' for lists, _ in LAYOUTS)
    raise DatasetLayoutError(f"{NAME}: expected {expected}, neither exists (the layouts under --root are "
                             f"described in docs/datasets.md)")


def read_sequence_list(path: str) -> List[Tuple[str, int]]:
    """(prefix, pid) per line of a ``list_seq_*.txt`` file."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                rows.append((parts[0], int(parts[1])))
            except (IndexError, ValueError) as err:
                raise ValueError(f"{NAME}: {path} line {number} must read '<tracklet prefix> <pid>'; "
                                 f"got {line.strip()!r}") from err
    if not rows:
        raise ValueError(f"{NAME}: {path} lists no tracklet")
    return rows


def read_query_rows(path: str, num_test: int) -> np.ndarray:
    """0-based test-list rows of the query tracklets from ``info_test.mat`` (``query``, 1-based)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "query" not in f:
                raise ValueError(f"{NAME}: {path} has no 'query' dataset (found: {sorted(f.keys())})")
            query = np.asarray(f["query"])
    except OSError:
        from scipy.io import loadmat

        try:
            query = np.asarray(loadmat(path)["query"])
        except Exception as err:
            raise ValueError(f"{NAME}: {path} must be a MATLAB v7.3 (HDF5) file holding a 'query' vector") from err
    if query.ndim == 2 and query.shape[0] == 1:
        query = query[0]
    elif query.ndim == 2 and query.shape[1] == 1:
        query = query[:, 0]
    if query.ndim != 1 or query.size == 0:
        raise ValueError(f"{NAME}: 'query' of {path} must be a non-empty vector; got shape {query.shape}")
    rows = query.astype(np.int64) - 1
    if rows.min() < 0 or rows.max() >= num_test:
        raise ValueError(f"{NAME}: 'query' of {path} holds rows outside 1..{num_test} (the test list length)")
    if len(np.unique(rows)) != len(rows):
        raise ValueError(f"{NAME}: 'query' of {path} repeats rows")
    return rows


class _PrefixIndex:
    """Frames by path prefix, listing each folder once (LS-VID folders hold many tracklets)."""

    def __init__(self) -> None:
        self.listings: Dict[str, List[str]] = {}

    def frames(self, prefix: str) -> Tuple[str, ...]:
        folder, stem = osp.split(prefix)
        if folder not in self.listings:
            names = os.listdir(folder) if osp.isdir(folder) else []
            self.listings[folder] = sorted(n for n in names if n.lower().endswith(FRAME_EXTENSIONS))
        names = self.listings[folder]
        lo = bisect.bisect_left(names, stem)
        hi = bisect.bisect_left(names, stem + "\U0010ffff")
        return tuple(osp.join(folder, name) for name in names[lo:hi])


def camera_of(frame: str) -> int:
    """0-based camera: the third '_'-separated field of the frame name (1..15), as the reference."""
    try:
        camera = int(osp.basename(frame).split("_")[2])
    except (IndexError, ValueError) as err:
        raise ValueError(f"{NAME}: cannot read the camera from frame name {frame} "
                         f"(expected <pid>_<tracklet>_<camera>_..., camera 1..{NUM_CAMERAS})") from err
    if not 1 <= camera <= NUM_CAMERAS:
        raise ValueError(f"{NAME}: camera {camera} of {frame} is outside 1..{NUM_CAMERAS}")
    return camera - 1


def _tracklets(dataset_dir: str, rows: Sequence[Tuple[str, int]], list_path: str, index: _PrefixIndex,
               pid2label: Optional[Dict[int, int]], subtracklet_len: int) -> List[Tracklet]:
    items = []
    for prefix, pid in rows:
        if pid == -1:
            continue
        frames = index.frames(osp.join(dataset_dir, prefix))
        if not frames:
            raise DatasetLayoutError(f'{NAME}: no frame starts with "{osp.join(dataset_dir, prefix)}" '
                                     f"(listed in {list_path})")
        camid = camera_of(frames[0])
        label = pid2label[pid] if pid2label is not None else pid
        items += [(frames[start:end], label, camid) for start, end in subtracklet_bounds(len(frames), subtracklet_len)]
    return items


@functools.lru_cache(maxsize=4)
def parse_lsvid(dataset_dir: str, subtracklet_len: int, stamp: Tuple[float, ...]) -> Tuple[list, list, list]:
    """(train, query, gallery) tuples; ``stamp`` (the list files' mtimes) keys the in-memory cache, so the
    three datasets torchreid's data manager builds share one parse. Nothing is written to disk."""
    train_list, test_list, info = find_layout(dataset_dir)
    index = _PrefixIndex()
    train_rows = read_sequence_list(train_list)
    test_rows = read_sequence_list(test_list)
    pids = sorted({pid for _, pid in train_rows if pid != -1})
    train = _tracklets(dataset_dir, train_rows, train_list, index, {pid: i for i, pid in enumerate(pids)},
                       subtracklet_len)
    query_rows = read_query_rows(info, len(test_rows))
    is_query = np.zeros(len(test_rows), dtype=bool)
    is_query[query_rows] = True
    query = _tracklets(dataset_dir, [test_rows[i] for i in query_rows], test_list, index, None, 0)
    gallery = _tracklets(dataset_dir, [row for row, q in zip(test_rows, is_query) if not q], test_list, index,
                         None, 0)
    for split, items, source in (("train", train, train_list), ("query", query, info), ("gallery", gallery, test_list)):
        if not items:
            raise ValueError(f"{NAME}: the {split} split is empty after dropping pid -1 ({source})")
    return train, query, gallery


class LSVID(TrackletSamplingMixin, host.VideoDataset):
    """LS-VID, registered as ``lsvid``: 842 training persons, 15 cameras, query/gallery from ``info_test.mat``.

    Args:
        root: the folder holding ``LS-VID/`` (or ``lsvid/``).
        subtracklet_len: training on pieces of this many frames (n // len pieces, the last taking the
            remainder), as the reference's 48; a tracklet shorter than that stays whole (the reference drops
            it); 0 = whole tracklets. Default: ``tfclip.lsvid_subtracklet`` of the active config.

    Labels follow ascending person id (the reference's order is hash-random); camera ids come from the
    first frame's name; pid -1 tracklets are dropped. Nothing is cached into the dataset folder.
    """

    def __init__(self, root: str = "", subtracklet_len: Optional[int] = None, **kwargs) -> None:
        if subtracklet_len is None:
            from ...config import active_config

            subtracklet_len = int(active_config().tfclip.lsvid_subtracklet)
        self.root = osp.abspath(osp.expanduser(root))
        candidates = [osp.join(self.root, folder) for folder in FOLDERS]
        self.dataset_dir = next((path for path in candidates if osp.isdir(path)), candidates[0])
        require_paths(NAME, [self.dataset_dir])
        lists = find_layout(self.dataset_dir)
        stamp = tuple(osp.getmtime(path) for path in lists)
        train, query, gallery = parse_lsvid(self.dataset_dir, int(subtracklet_len), stamp)
        super().__init__(list(train), list(query), list(gallery), **kwargs)
