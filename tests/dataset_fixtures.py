"""Writers of tiny datasets in the exact on-disk formats the parsers read, for tests.

Each writer returns what it wrote (pids, cameras, frame paths in temporal order, split rows), so a test can
compare a parser's output with the expected tracklets. Frames are tiny images whose colour encodes
(pid, camera, frame number) so frame order can be checked after loading. Files are created in a shuffled
order, so a parser that does not sort what it lists shows up.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import random
from typing import Dict, List, Sequence, Tuple

import h5py
import numpy as np
from PIL import Image
from scipy.io import savemat

FRAME_SIZE = (4, 8)  # width, height


def frame_colour(pid: int, cam: int, frame: int) -> Tuple[int, int, int]:
    """The uniform colour of a fixture frame."""
    return ((pid * 37) % 256, (cam * 50) % 256, (frame * 9) % 256)


def write_frames(items: Sequence[Tuple[str, Tuple[int, int, int]]], seed: int = 0) -> None:
    """Write (path, colour) frames, in shuffled order."""
    items = list(items)
    random.Random(seed).shuffle(items)
    for path, colour in items:
        os.makedirs(osp.dirname(path), exist_ok=True)
        Image.new("RGB", FRAME_SIZE, colour).save(path)


def write_corrupt_frame(path: str) -> None:
    """Replace ``path`` with bytes no image decoder accepts."""
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff this is not a JPEG stream")


# ----------------------------------------------------------------------------------------------- MARS
def mars_name(pid: int, cam: int, tracklet: int, frame: int) -> str:
    """MARS frame name, e.g. 0001C1T0001F001.jpg (junk pid -1: 00-1C1T0001F001.jpg)."""
    folder = "00-1" if pid == -1 else f"{pid:04d}"
    return f"{folder}C{cam}T{tracklet:04d}F{frame:03d}.jpg"


def write_mars(root: str, train: Sequence[Tuple[int, int, int]], test: Sequence[Tuple[int, int, int]],
               query_rows: Sequence[int], folder: str = "mars") -> Dict:
    """MARS layout under ``root/folder``: ``train``/``test`` rows (pid, camera 1..6, frames); ``query_rows``
    0-based test rows. Returns {'dir', 'train': [(paths, pid, cam)], 'test': [...], 'query_rows'}."""
    base = osp.join(root, folder)
    written: Dict = {"dir": base, "query_rows": list(query_rows)}
    frames = []
    for split, home, rows in (("train", "bbox_train", train), ("test", "bbox_test", test)):
        names, info, tracklets, counters = [], [], [], {}
        for pid, cam, length in rows:
            counters[(pid, cam)] = counters.get((pid, cam), 0) + 1
            first = len(names) + 1
            paths = []
            for f in range(1, length + 1):
                name = mars_name(pid, cam, counters[(pid, cam)], f)
                names.append(name)
                path = osp.join(base, home, name[:4], name)
                paths.append(path)
                frames.append((path, frame_colour(pid, cam, f)))
            info.append((first, len(names), pid, cam))
            tracklets.append((tuple(paths), pid, cam))
        os.makedirs(osp.join(base, "info"), exist_ok=True)
        with open(osp.join(base, "info", f"{split}_name.txt"), "w") as f:
            f.write("\n".join(names) + "\n")
        key = f"track_{split}_info"
        savemat(osp.join(base, "info", f"tracks_{split}_info.mat"), {key: np.asarray(info, dtype=np.int32)})
        written[split] = tracklets
    savemat(osp.join(base, "info", "query_IDX.mat"),
            {"query_IDX": (np.asarray(query_rows, dtype=np.int32) + 1)[None]})
    write_frames(frames)
    return written


def reference_mars_splits(written: Dict) -> Tuple[List[tuple], List[tuple], List[tuple]]:
    """What the reference parser (AsuradaYuci/TF-CLIP datasets/set/mars.py) yields for a :func:`write_mars` fixture:
    (train, query, gallery) of (paths, pid, camid); train labels in ascending pid order, junk dropped,
    distractors kept, cameras 0-based."""
    labels = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in written["train"]}))}
    train = [(paths, labels[pid], cam - 1) for paths, pid, cam in written["train"]]
    query_rows = set(written["query_rows"])
    test = [(paths, pid, cam - 1) for paths, pid, cam in written["test"]]
    query = [test[i] for i in written["query_rows"] if test[i][1] != -1]
    gallery = [item for i, item in enumerate(test) if i not in query_rows and item[1] != -1]
    return train, query, gallery


# ---------------------------------------------------------------------------------------------- LS-VID
def write_lsvid(root: str, train: Sequence[Tuple[int, int, int]], test: Sequence[Tuple[int, int, int]],
                query_rows: Sequence[int], extra_info_level: bool = False, folder: str = "LS-VID") -> Dict:
    """LS-VID layout under ``root/folder``: list files, ``info_test.mat`` (HDF5, 'query' (1, Q) 1-based) and
    frames ``tracklet_<split>/<pid4>/<pid4>_<t4>_<cam2>_0001_<f4>.jpg``; ``extra_info_level`` puts the lists
    and the .mat under ``info/`` as the reference expects. Returns {'dir', 'train', 'test', 'query_rows'} with
    (paths, pid, cam) tracklets."""
    base = osp.join(root, folder)
    lists_dir = osp.join(base, "info", "list_sequence") if extra_info_level else osp.join(base, "list_sequence")
    mat_path = (osp.join(base, "info", "data", "info_test.mat") if extra_info_level
                else osp.join(base, "test", "data", "info_test.mat"))
    written: Dict = {"dir": base, "query_rows": list(query_rows), "lists": lists_dir, "mat": mat_path}
    frames = []
    for split, rows in (("train", train), ("test", test)):
        lines, tracklets = [], []
        for t, (pid, cam, length) in enumerate(rows, 1):
            pid_dir = "junk" if pid == -1 else f"{pid:04d}"
            prefix = f"tracklet_{split}/{pid_dir}/{max(pid, 0):04d}_{t:04d}_{cam:02d}_0001_"
            paths = tuple(osp.join(base, f"{prefix}{f:04d}.jpg") for f in range(1, length + 1))
            frames += [(path, frame_colour(pid, cam, f)) for f, path in enumerate(paths, 1)]
            lines.append(f"{prefix} {pid}")
            tracklets.append((paths, pid, cam))
        os.makedirs(lists_dir, exist_ok=True)
        with open(osp.join(lists_dir, f"list_seq_{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        written[split] = tracklets
    os.makedirs(osp.dirname(mat_path), exist_ok=True)
    with h5py.File(mat_path, "w") as f:
        f.create_dataset("query", data=(np.asarray(query_rows, dtype=np.float64) + 1)[None])
    write_frames(frames)
    return written


# ------------------------------------------------------------------------------------------- iLIDS-VID
def write_ilidsvid(root: str, lengths: Sequence[Tuple[int, int]], num_splits: int = 10, seed: int = 0) -> Dict:
    """iLIDS-VID layout under ``root/ilids-vid``: ``i-LIDS-VID/sequences/cam{1,2}/personNNN/
    cam{c}_personNNN_<frame5>.png`` (frame numbers start at a random offset) and ``train-test people
    splits/train_test_splits_ilidsvid.mat`` (``ls_set``: ``num_splits`` random permutations, 1-based).
    ``lengths`` holds (cam1 frames, cam2 frames) per person; person numbers skip some values as in the
    real data. Returns {'dir', 'persons', 'frames': {(person, cam): paths}, 'ls_set'}."""
    rng = np.random.default_rng(seed)
    base = osp.join(root, "ilids-vid")
    numbers = np.sort(rng.choice(np.arange(1, 2 * len(lengths) + 1), len(lengths), replace=False))
    persons = [f"person{n:03d}" for n in numbers]
    frames, paths_of = [], {}
    for person, number, counts in zip(persons, numbers, lengths):
        for cam, count in zip((1, 2), counts):
            start = int(rng.integers(0, 500))
            folder = osp.join(base, "i-LIDS-VID", "sequences", f"cam{cam}", person)
            paths = tuple(osp.join(folder, f"cam{cam}_{person}_{start + f:05d}.png") for f in range(count))
            paths_of[(person, cam)] = paths
            frames += [(path, frame_colour(int(number), cam, f)) for f, path in enumerate(paths)]
    ls_set = np.stack([rng.permutation(len(lengths)) + 1 for _ in range(num_splits)]).astype(np.float64)
    split_dir = osp.join(base, "train-test people splits")
    os.makedirs(split_dir, exist_ok=True)
    savemat(osp.join(split_dir, "train_test_splits_ilidsvid.mat"), {"ls_set": ls_set})
    write_frames(frames, seed)
    return {"dir": base, "persons": persons, "frames": paths_of, "ls_set": ls_set.astype(np.int64)}


# -------------------------------------------------------------------------------------------- PRID2011
def write_prid2011(root: str, lengths: Sequence[Tuple[int, int]], splits: Sequence[Tuple[Sequence[int], Sequence[int]]]
                   ) -> Dict:
    """PRID2011 layout under ``root/prid2011``: ``prid_2011/multi_shot/cam_{a,b}/person_NNNN/NNNN.png`` and
    ``splits_prid2011.json`` ([{'train': [dirs], 'test': [dirs]}] from ``splits`` of 0-based person
    indices). Returns {'dir', 'persons', 'frames': {(person, cam): paths}}."""
    base = osp.join(root, "prid2011")
    persons = [f"person_{i + 1:04d}" for i in range(len(lengths))]
    frames, paths_of = [], {}
    for i, (person, counts) in enumerate(zip(persons, lengths)):
        for cam, count in zip(("a", "b"), counts):
            folder = osp.join(base, "prid_2011", "multi_shot", f"cam_{cam}", person)
            paths = tuple(osp.join(folder, f"{f:04d}.png") for f in range(1, count + 1))
            paths_of[(person, cam)] = paths
            frames += [(path, frame_colour(i + 1, ord(cam), f)) for f, path in enumerate(paths, 1)]
    os.makedirs(base, exist_ok=True)
    with open(osp.join(base, "splits_prid2011.json"), "w") as f:
        json.dump([{"train": [persons[i] for i in tr], "test": [persons[i] for i in te]} for tr, te in splits], f)
    write_frames(frames)
    return {"dir": base, "persons": persons, "frames": paths_of}


# ------------------------------------------------------------------------------------- Market-1501 (images)
def market_image_name(pid: int, cam: int, frame: int) -> str:
    """Market-1501 image name, e.g. 0002_c1s1_000451_01.jpg (junk pid -1: -1_c1s1_000451_01.jpg)."""
    person = "-1" if pid == -1 else f"{pid:04d}"
    return f"{person}_c{cam}s1_{frame:06d}_01.jpg"


def write_market1501(root: str, splits: Dict[str, Sequence[Tuple[int, int]]], folder: str = "market1501") -> Dict:
    """Market-1501 layout under ``root/folder/Market-1501-v15.09.15``: ``splits`` maps 'bounding_box_train',
    'bounding_box_test' and 'query' to (pid, camera 1..6) rows, one image each (pid -1 junk, 0 distractor).
    Returns {split: [(path, pid, camera 0-based)]} of what torchreid keeps (junk dropped)."""
    base = osp.join(root, folder, "Market-1501-v15.09.15")
    written: Dict = {}
    images = []
    for split, rows in splits.items():
        kept = []
        for i, (pid, cam) in enumerate(rows):
            path = osp.join(base, split, market_image_name(pid, cam, 25 * (i + 1)))
            images.append((path, frame_colour(max(pid, 0), cam, i)))
            if pid != -1:
                kept.append((path, pid, cam - 1))
        written[split] = kept
    write_frames(images)
    return written


def write_msmt17(root: str, lists: Dict[str, Sequence[Tuple[int, int]]], version: str = "MSMT17_V1") -> Dict:
    """MSMT17 layout under ``root/msmt17/<version>``: ``lists`` maps 'train', 'val', 'query', 'gallery' to
    (pid, camera 1..15) rows; train/val images go to ``train/``, query/gallery ones to ``test/``, listed in
    ``list_<name>.txt`` as ``<pid 4>/<pid 4>_<n>_<camera 2>_0113morning_0000_0.jpg <pid>``. Returns
    {name: [(path, pid, camera 0-based)]}."""
    base = osp.join(root, "msmt17", version)
    written: Dict = {}
    images = []
    for name, rows in lists.items():
        folder = "train" if name in ("train", "val") else "test"
        lines, kept = [], []
        for i, (pid, cam) in enumerate(rows):
            relative = f"{pid:04d}/{pid:04d}_{len(images):03d}_{cam:02d}_0113morning_{i:04d}_0.jpg"
            lines.append(f"{relative} {pid}")
            path = osp.join(base, folder, relative)
            images.append((path, frame_colour(pid, cam, i)))
            kept.append((path, pid, cam - 1))
        os.makedirs(base, exist_ok=True)
        with open(osp.join(base, f"list_{name}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        written[name] = kept
    write_frames(images)
    return written
