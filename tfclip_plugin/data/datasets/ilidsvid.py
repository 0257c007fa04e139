"""iLIDS-VID: torchreid's tracklet protocol with sorted frames, and the reference's window protocol.

Layout under ``<root>/ilids-vid`` (docs/datasets.md): ``i-LIDS-VID/sequences/cam{1,2}/personNNN/*.png``
and ``train-test people splits/train_test_splits_ilidsvid.mat`` (``ls_set``: 10 rows of 1-based indices
into the person folders sorted by name). No optical-flow folder is needed.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
from scipy.io import loadmat

from ... import host
from ..sampling import sliding_windows
from ..video import TrackletSamplingMixin
from .layout import DatasetLayoutError, person_frames, require_paths

DATASET_DIR = "ilids-vid"
SEQUENCES = osp.join("i-LIDS-VID", "sequences")
SPLIT_MAT = osp.join("train-test people splits", "train_test_splits_ilidsvid.mat")


class iLIDSVID(TrackletSamplingMixin, host.iLIDSVID):
    """iLIDS-VID as torchreid defines it, the standard protocol (Wang et al., ECCV 2014): split ``split_id`` of
    10; train = ``ls_set[split_id, 150:]`` (both cameras), query = cam1 and gallery = cam2 tracklets of
    ``ls_set[split_id, :150]`` (150 and 150); one tracklet per person and camera, frames sorted by name
    (torchreid globs them unsorted). torchreid writes ``splits.json`` into the dataset folder. Never downloads.

    ``train_window_stride`` N > 0 cuts each training tracklet into windows of ``seq_len`` consecutive frames, one
    starting every N frames (:func:`~tfclip_plugin.data.sampling.sliding_windows`), as the reference trains on
    iLIDS-VID (8 frames, N = 4: about 300 batches of 16 per epoch instead of 37); query and gallery stay whole
    tracklets. Default: ``tfclip.ilidsvid_train_stride`` of the active config (0 = whole tracklets).
    """

    def __init__(self, root: str = "", split_id: int = 0, train_window_stride: Optional[int] = None,
                 **kwargs) -> None:
        if train_window_stride is None:
            from ...config import active_config

            train_window_stride = int(active_config().tfclip.ilidsvid_train_stride)
        if train_window_stride < 0:
            raise ValueError(f"tfclip.ilidsvid_train_stride must be >= 0; got {train_window_stride}")
        self.train_window = (int(kwargs.get("seq_len", 15)), int(train_window_stride))
        super().__init__(root=root, split_id=split_id, **kwargs)

    def download_dataset(self, dataset_dir: str, dataset_url) -> None:
        require_paths(type(self).__name__, [dataset_dir])

    def check_before_run(self, required_files) -> None:
        required = [required_files] if isinstance(required_files, str) else list(required_files)
        require_paths(type(self).__name__, required + [self.cam_1_path, self.cam_2_path, self.split_mat_path])

    def prepare_split(self) -> None:
        try:
            super().prepare_split()
        except (AssertionError, KeyError) as err:
            raise ValueError(f"{type(self).__name__}: {self.split_mat_path} must hold 'ls_set' (10 rows of 300 "
                             f"1-based person indices) and {self.cam_1_path} and {self.cam_2_path} the same person "
                             f"folders") from err

    def process_data(self, dirnames: Sequence[str], cam1: bool = True, cam2: bool = True) -> List[tuple]:
        if not dirnames:
            raise ValueError(f"{type(self).__name__}: split {self.split_path} lists no person")
        window, stride = self.train_window
        windowed = stride > 0 and cam1 and cam2  # torchreid's training call reads both cameras
        tracklets = []
        for pid, dirname in enumerate(dirnames):
            for camid, use, cam_path in ((0, cam1, self.cam_1_path), (1, cam2, self.cam_2_path)):
                if use:
                    frames = person_frames(type(self).__name__, osp.join(cam_path, dirname), (".png",))
                    bounds = sliding_windows(len(frames), window, stride) if windowed else [(0, len(frames))]
                    tracklets += [(frames[start:end], pid, camid) for start, end in bounds]
        return tracklets


class iLIDSVIDTFCLIP(TrackletSamplingMixin, host.VideoDataset):
    """iLIDS-VID as the reference TF-CLIP code evaluates it (AsuradaYuci/TF-CLIP ``datasets/set/ilidsvidsequence.py``, ``datasets/seqpreprocessor.py``), registered as
    ``ilidsvid_tfclip``.

    - The halves are swapped relative to torchreid: train = ``ls_set[split_id, :N/2]`` (N = 300), test =
      ``ls_set[split_id, N/2:]``.
    - Every item is a window of ``window`` (8) consecutive frames, one starting every ``window_stride`` (4)
      frames, starts in ``range(0, n - window, window_stride)`` (so the last full window is left out) or one
      window of all n frames when there is none (:func:`~tfclip_plugin.data.sampling.sliding_windows`).
    - Training items: the windows of both cameras of the train persons. Query items: the cam1 windows of
      the test persons; gallery items: their cam2 windows. CMC and mAP are therefore per window.
    - Labels are the positions of the persons in ascending index order (the reference shuffles them with
      numpy's seed); test pids likewise. Frames are sorted by name. No optical-flow folder is needed and
      nothing is written into the dataset folder.

    Windows shorter than 8 frames (sequences under 9 frames; none in the real data) are padded by the
    sampler (RRS: last frame repeated, as the reference; dense: cycled).
    """

    dataset_dir = DATASET_DIR

    def __init__(self, root: str = "", split_id: int = 0, window: int = 8, window_stride: int = 4, **kwargs) -> None:
        name = type(self).__name__
        self.root = osp.abspath(osp.expanduser(root))
        self.dataset_dir = osp.join(self.root, DATASET_DIR)
        cam_paths = [osp.join(self.dataset_dir, SEQUENCES, cam) for cam in ("cam1", "cam2")]
        self.split_mat_path = osp.join(self.dataset_dir, SPLIT_MAT)
        require_paths(name, [self.dataset_dir, *cam_paths, self.split_mat_path])

        persons = _person_folders(cam_paths[0])
        if _person_folders(cam_paths[1]) != persons:
            raise DatasetLayoutError(f"{name}: {cam_paths[0]} and {cam_paths[1]} must hold the same person folders")
        ls_set = np.asarray(_load_ls_set(name, self.split_mat_path))
        if not 0 <= split_id < len(ls_set):
            raise ValueError(f"{name}: split_id must lie in [0, {len(ls_set) - 1}] ({self.split_mat_path}); "
                             f"got {split_id}")
        row = ls_set[split_id].astype(np.int64) - 1
        if row.min() < 0 or row.max() >= len(persons):
            raise ValueError(f"{name}: ls_set of {self.split_mat_path} indexes persons outside 1..{len(persons)}")
        half = len(row) // 2
        train_persons = [persons[i] for i in sorted(row[:half])]
        test_persons = [persons[i] for i in sorted(row[half:])]

        def windows(people: Sequence[str], cams: Sequence[int]) -> List[tuple]:
            items = []
            for pid, person in enumerate(people):
                for camid in cams:
                    frames = person_frames(name, osp.join(cam_paths[camid], person), (".png",))
                    items += [(frames[start:end], pid, camid)
                              for start, end in sliding_windows(len(frames), window, window_stride)]
            return items

        train = windows(train_persons, (0, 1))
        query = windows(test_persons, (0,))
        gallery = windows(test_persons, (1,))
        super().__init__(train, query, gallery, **kwargs)


def _person_folders(cam_path: str) -> List[str]:
    return sorted(d for d in os.listdir(cam_path) if osp.isdir(osp.join(cam_path, d)))


def _load_ls_set(name: str, path: str) -> np.ndarray:
    try:
        ls_set = loadmat(path)["ls_set"]
    except KeyError as err:
        raise ValueError(f"{name}: {path} holds no 'ls_set' (10 rows of 1-based person indices)") from err
    if ls_set.ndim != 2 or ls_set.shape[1] < 2:
        raise ValueError(f"{name}: 'ls_set' of {path} must be a (splits, persons) matrix; got {ls_set.shape}")
    return ls_set
