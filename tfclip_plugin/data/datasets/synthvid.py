"""synthvid: the generated benchmark, parsed by the MARS code path (it is written in MARS's format)."""
from __future__ import annotations

import os.path as osp

from ..synthvid import DATASET_DIR, generate_synthvid
from .mars import Mars


class SynthVid(Mars):
    """``<root>/synthvid``, generated with the default seed and sizes when missing (see
    :func:`~tfclip_plugin.data.synthvid.generate_synthvid` for other seeds and sizes), then read exactly as
    MARS: junk (pid -1) dropped, distractors (pid 0) kept in the gallery."""

    dataset_dir = DATASET_DIR

    def __init__(self, root: str = "", **kwargs) -> None:
        target = osp.join(osp.abspath(osp.expanduser(root)), DATASET_DIR)
        if not osp.exists(target):
            try:
                generate_synthvid(root)
            except OSError:
                if not osp.exists(target):  # another process may have renamed its copy into place first
                    raise
        super().__init__(root=root, **kwargs)
