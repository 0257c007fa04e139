"""TF-CLIP (AAAI 2024) video person re-identification as a torchreid plugin.

``import tfclip_plugin`` registers the plugin's video datasets and the ``tfclip_vit`` / ``tfclip_rn50``
model builders into torchreid's registries; importing again, or calling :func:`register` again, is a no-op.
"""
from __future__ import annotations

from . import host
from .config import get_default_config
from .models import build_tfclip, load_official_checkpoint, model_complexity

__version__ = "0.1.0"


def register() -> None:
    """Register the plugin's datasets and models into torchreid (idempotent)."""
    from .data.datasets import CORRECTED_DATASETS, VIDEO_DATASETS
    from .models import MODEL_BUILDERS

    for name, cls in VIDEO_DATASETS.items():
        host.register_video_dataset(name, cls)
    for name, cls in CORRECTED_DATASETS.items():
        host.replace_video_dataset(name, cls)
    for name, builder in MODEL_BUILDERS.items():
        host.register_model(name, builder)


register()
