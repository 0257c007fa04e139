"""The data manager of a run, by ``data.type``: tracklets (:mod:`.video`) or images (:mod:`.image`)."""
from __future__ import annotations

from yacs.config import CfgNode as CN

from .image import build_image_datamanager
from .video import build_video_datamanager

DATA_TYPES = {"video": build_video_datamanager, "image": build_image_datamanager}


def build_datamanager(cfg: CN):
    """torchreid's ``VideoDataManager`` (``data.type video``) or ``ImageDataManager`` (``data.type image``) with
    the plugin's transforms; ``ValueError`` naming ``data.type`` otherwise."""
    if cfg.data.type not in DATA_TYPES:
        raise ValueError(f"data.type must be one of {', '.join(DATA_TYPES)}; got {cfg.data.type!r}")
    return DATA_TYPES[cfg.data.type](cfg)
