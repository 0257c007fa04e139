"""synthvid: the generated benchmark, parsed by the MARS code path (it is written in MARS's format)."""
from __future__ import annotations

from ..synthvid import DATASET_DIR, ensure_generated, generate_synthvid
from .mars import Mars


class SynthVid(Mars):
    """``<root>/synthvid``, generated with the default seed and sizes when missing (see
    :func:`~tfclip_plugin.data.synthvid.generate_synthvid` for other seeds and sizes), then read exactly as
    MARS: junk (pid -1) dropped, distractors (pid 0) kept in the gallery."""

    dataset_dir = DATASET_DIR

    def __init__(self, root: str = "", **kwargs) -> None:
        ensure_generated(root, DATASET_DIR, generate_synthvid)
        super().__init__(root=root, **kwargs)
