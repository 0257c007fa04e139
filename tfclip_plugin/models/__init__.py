"""TF-CLIP models on open_clip's CLIP visual towers.

``build_tfclip`` builds any variant from explicit :class:`ModelOptions` (CLIP-ReID's text branch included);
``checkpoint_import`` loads trained weights of each origin (ours, official TF-CLIP, CLIP-ReID). Nothing here
reads the plugin's config or touches torchreid: the torchreid registry builders live in
``tfclip_plugin.registry``.
"""
from .checkpoint_import import (
    checkpoint_generation, is_clipreid_state_dict, load_clipreid_checkpoint, load_matching_weights,
    load_official_checkpoint, load_tfclip_state_dict, load_weights,
)
from .complexity import count_parameters, model_complexity
from .options import MEMORY_MODES, ModelOptions, memory_mode
from .tfclip import ARCHITECTURES, TFCLIP, TFCLIPOutput, build_tfclip

__all__ = [
    "ARCHITECTURES", "MEMORY_MODES", "ModelOptions", "TFCLIP", "TFCLIPOutput", "build_tfclip",
    "checkpoint_generation", "count_parameters", "is_clipreid_state_dict", "load_clipreid_checkpoint",
    "load_matching_weights", "load_official_checkpoint", "load_tfclip_state_dict", "load_weights", "memory_mode",
    "model_complexity",
]
