"""MSMT17 with CLIP-ReID's training set: ``list_train.txt`` + ``list_val.txt``."""
from __future__ import annotations

import os.path as osp

from ... import host


class MSMT17TrainVal(host.MSMT17):
    """torchreid's MSMT17 parser and layout (``<root>/msmt17/MSMT17_V1/`` or ``MSMT17_V2/``), with the training set
    of CLIP-ReID (``datasets/msmt17.py:38-40``) and the MSMT17 benchmark: the images of ``list_train.txt`` and
    ``list_val.txt`` (32,621 images of 1,041 persons; torchreid's ``msmt17`` trains on ``list_train.txt`` alone,
    30,248 images, and adds the validation images only with ``combineall``). Person ids are the lists' own
    (0..1040, shared by both lists); query and gallery are torchreid's."""

    def __init__(self, root: str = "", **kwargs) -> None:
        self._add_val = not kwargs.get("combineall", False)  # with combineall torchreid adds list_val.txt itself
        super().__init__(root=root, **kwargs)

    def process_dir(self, dir_path: str, list_path: str):
        items = super().process_dir(dir_path, list_path)
        if self._add_val and osp.basename(list_path) == "list_train.txt":
            items += super().process_dir(dir_path, osp.join(osp.dirname(list_path), "list_val.txt"))
        return items
