"""TF-CLIP models on open_clip's CLIP visual towers.

``build_tfclip`` builds any variant from explicit :class:`ModelOptions`; ``checkpoint_import`` loads trained
weights of each origin. Nothing here reads the plugin's config or touches torchreid: the torchreid registry
builders live in ``tfclip_plugin.registry``.
"""
from .checkpoint_import import (
    checkpoint_generation, load_matching_weights, load_official_checkpoint, load_tfclip_state_dict, load_weights,
)
from .complexity import count_parameters, model_complexity
from .options import ModelOptions
from .tfclip import ARCHITECTURES, TFCLIP, TFCLIPOutput, build_tfclip

__all__ = [
    "ARCHITECTURES", "ModelOptions", "TFCLIP", "TFCLIPOutput", "build_tfclip", "checkpoint_generation",
    "count_parameters", "load_matching_weights", "load_official_checkpoint", "load_tfclip_state_dict",
    "load_weights", "model_complexity",
]
