"""TF-CLIP models on open_clip's CLIP visual towers.

``MODEL_BUILDERS`` holds the torchreid builders ``tfclip_vit`` (CLIP ViT-B/16) and ``tfclip_rn50`` (CLIP
ModifiedResNet-50, last stride 1); they read the ``tfclip`` node and ``data.height/width`` of
``config.active_config()``. ``build_tfclip`` builds any variant with explicit options.
"""
from .checkpoints import checkpoint_generation, load_official_checkpoint, load_tfclip_state_dict
from .complexity import count_parameters, model_complexity
from .tfclip import MODEL_BUILDERS, TFCLIP, TFCLIPOutput, build_tfclip

__all__ = [
    "MODEL_BUILDERS", "TFCLIP", "TFCLIPOutput", "build_tfclip", "load_official_checkpoint",
    "load_tfclip_state_dict", "checkpoint_generation", "model_complexity", "count_parameters",
]
