"""PRID2011: torchreid's parser with sorted frames and layout errors that name the missing file."""
from __future__ import annotations

import os.path as osp
from typing import List, Sequence

from ... import host
from ..video import TrackletSamplingMixin
from .layout import person_frames, require_paths


class PRID2011(TrackletSamplingMixin, host.PRID2011):
    """PRID2011 under ``<root>/prid2011``: ``prid_2011/multi_shot/cam_{a,b}/person_NNNN/*.png`` and
    ``splits_prid2011.json`` (torchreid's 10 splits, downloaded by hand; see docs/datasets.md). Query =
    cam_a, gallery = cam_b tracklets of the test persons; frames sorted by name. Never downloads."""

    def download_dataset(self, dataset_dir: str, dataset_url) -> None:
        require_paths(type(self).__name__, [dataset_dir])

    def check_before_run(self, required_files) -> None:
        required = [required_files] if isinstance(required_files, str) else list(required_files)
        require_paths(type(self).__name__, required + [self.split_path])

    def process_dir(self, dirnames: Sequence[str], cam1: bool = True, cam2: bool = True) -> List[tuple]:
        if not dirnames:
            raise ValueError(f"{type(self).__name__}: a split of {self.split_path} lists no person")
        tracklets = []
        for pid, dirname in enumerate(dirnames):
            for camid, use, cam_dir in ((0, cam1, self.cam_a_dir), (1, cam2, self.cam_b_dir)):
                if use:
                    frames = person_frames(type(self).__name__, osp.join(cam_dir, dirname), (".png",))
                    tracklets.append((frames, pid, camid))
        return tracklets
