"""TF-CLIP (AAAI 2024) video person re-identification as a torchreid plugin.

``import tfclip_plugin`` registers the plugin's video datasets and the ``tfclip_vit`` / ``tfclip_rn50`` model
builders into torchreid's registries; importing again, or calling :func:`register` again, is a no-op.
"""
from __future__ import annotations

from . import host
from .config import get_default_config
from .models import ModelOptions, build_tfclip, load_clipreid_checkpoint, load_official_checkpoint, model_complexity
from .registry import register, register_checkpoint

__version__ = "0.1.0"

__all__ = ["ModelOptions", "build_tfclip", "get_default_config", "host", "load_clipreid_checkpoint",
           "load_official_checkpoint", "model_complexity", "register", "register_checkpoint"]

register()
