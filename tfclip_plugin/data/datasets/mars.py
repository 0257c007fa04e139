"""MARS: torchreid's parser with TF-CLIP's sampling and layout errors that name the missing file.

torchreid's ``Mars`` parses exactly as the reference (AsuradaYuci/TF-CLIP ``datasets/set/mars.py``): query = the test rows listed
in ``info/query_IDX.mat``, gallery = the other test rows, junk (pid -1) dropped, distractors (pid 0) kept,
camera ids 0..5, training labels in ascending pid order, frames in ``info/*_name.txt`` order. The
TF-CLIP protocol (gallery = query + gallery) is applied by the evaluation, not here.
"""
from __future__ import annotations

import os.path as osp
from typing import List

import numpy as np

from ... import host
from ..video import TrackletSamplingMixin
from .layout import DatasetLayoutError, require_paths

INFO_FILES = ("train_name.txt", "test_name.txt", "tracks_train_info.mat", "tracks_test_info.mat", "query_IDX.mat")


class Mars(TrackletSamplingMixin, host.Mars):
    """MARS under ``<root>/mars``: ``bbox_train/``, ``bbox_test/``, ``info/`` (see docs/datasets.md).

    Never downloads. Raises :class:`~.layout.DatasetLayoutError` naming a missing file or person folder,
    ``ValueError`` naming the info file whose rows are inconsistent or leave a split empty.
    """

    def download_dataset(self, dataset_dir: str, dataset_url) -> None:
        require_paths(type(self).__name__, [dataset_dir])

    def check_before_run(self, required_files) -> None:
        required = [required_files] if isinstance(required_files, str) else list(required_files)
        required += [osp.join(self.dataset_dir, name) for name in ("bbox_train", "bbox_test")]
        required += [osp.join(self.dataset_dir, "info", name) for name in INFO_FILES]
        require_paths(type(self).__name__, required)

    def process_data(self, names, meta_data, home_dir=None, relabel=False, min_seq_len=0) -> List[tuple]:
        name = type(self).__name__
        meta_data = np.atleast_2d(meta_data)  # torchreid's squeeze() leaves a single query row 1-D
        info = osp.join(self.dataset_dir, "info", "tracks_train_info.mat" if home_dir == "bbox_train"
                        else "tracks_test_info.mat")
        names_file = osp.join(self.dataset_dir, "info", "train_name.txt" if home_dir == "bbox_train"
                              else "test_name.txt")
        if len(meta_data) and (meta_data[:, 0].min() < 1 or meta_data[:, 1].max() > len(names)
                               or (meta_data[:, 1] < meta_data[:, 0]).any()):
            raise ValueError(f"{name}: rows of {info} point outside the {len(names)} frame names of {names_file}")
        try:
            tracklets = super().process_data(names, meta_data, home_dir=home_dir, relabel=relabel,
                                             min_seq_len=min_seq_len)
        except (AssertionError, ValueError, IndexError) as err:
            raise ValueError(f"{name}: inconsistent tracklet rows in {info} (each row: first and last frame "
                             f"number in the name list, pid, camera 1..6; one person and camera per row): "
                             f"{err}") from err
        if not tracklets:
            split = "train" if home_dir == "bbox_train" else "query or gallery (info/query_IDX.mat)"
            raise ValueError(f"{name}: the {split} split is empty: {len(meta_data)} rows of {info}, none usable "
                             f"(junk rows with pid -1 are dropped)")
        folders = sorted({osp.dirname(item[0][0]) for item in tracklets})
        missing = [folder for folder in folders if not osp.isdir(folder)]
        if missing:
            raise DatasetLayoutError(f'{name}: person folder "{missing[0]}" listed by {info} does not exist '
                                     f"({len(missing)} of {len(folders)} folders missing)")
        return tracklets
