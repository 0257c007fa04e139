"""The closed set of model options: the ``tfclip.*`` config keys that decide how a TF-CLIP model is built.

``ModelOptions`` is the one place that names them, with their types and defaults; the config's ``tfclip``
node takes its model-key defaults from here (``config.model_options`` builds one from a config), and
``build_tfclip(..., **options)`` accepts exactly these keywords.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Tuple

from .ssp import SSP_NAMES, SSP_RESIDUALS
from .temporal import TEMPORAL_NAMES

MEMORY_MODES = ("clip", "text", "none")
_LEGACY_MEMORY = {True: "clip", False: "none", "true": "clip", "false": "none"}


def memory_mode(value: Any) -> str:
    """``tfclip.memory`` as one of :data:`MEMORY_MODES`; the boolean values of older configs, command lines and
    checkpoints map True -> 'clip' (CLIP-Memory), False -> 'none' (also the strings 'True'/'False', any case).

    Raises ValueError naming the key and the valid values for anything else.
    """
    if isinstance(value, str):
        mode = _LEGACY_MEMORY.get(value.strip().lower(), value.strip().lower())
    elif isinstance(value, bool):
        mode = _LEGACY_MEMORY[value]
    else:
        mode = None
    if mode not in MEMORY_MODES:
        raise ValueError(f"tfclip.memory must be one of {', '.join(MEMORY_MODES)} (or True = 'clip', False = "
                         f"'none'); got {value!r}")
    return mode


@dataclass(frozen=True)
class ModelOptions:
    """How a TF-CLIP model is built (besides its name, class and camera counts and input size).

    clip_weights: '' (random towers), a CLIP weights file (OpenAI TorchScript archive, state dict, open_clip
        checkpoint) or 'openai' (open_clip's download); loaded when the model is built with ``pretrained``.
    memory: the class table the projected feature is contrasted with: 'clip' (CLIP-Memory + SSP + V2M loss),
        'text' (CLIP-ReID's learned prompts through CLIP's text encoder; stage 1 then the image-to-text loss),
        'none' (neither: the supplement's Table 7 rows "without CLIP-M"). True/False are read as 'clip'/'none'.
    ssp: 'paper' | 'released' | 'none'; ssp_layers: SSP decoder layers.
    ssp_residual: 'update' (V2M against M + delta, the paper's Algorithm 2) | 'pre-release' (against 2M + delta,
        what the code of the LS-VID and iLIDS-VID checkpoints computed; the paper SSP's, no effect without an SSP).
    temporal: 'tmd' | 'tmc' (TMD without MD) | 'tap' | 'conv1d' | 'transf' | 'transf_cls'.
    sie: camera embedding on the ViT's CLS token (the CNN has none); sie_coe: its scale.
    stride: ViT patch stride (16, or 12 for overlapping patches).
    vision_width, vision_layers, embed_dim: tower sizes, 0 = the architecture's own (small values build
        tiny towers for tests and the demo).
    text_width, text_layers: the text tower's size in text mode, 0 = the architecture's own (512, 12).
    grad_checkpointing: activation checkpointing of the visual transformer blocks.
    """

    clip_weights: str = ""
    memory: str = "clip"
    ssp: str = "paper"
    ssp_layers: int = 2
    ssp_residual: str = "update"
    temporal: str = "tmd"
    sie: bool = True
    sie_coe: float = 1.0
    stride: int = 16
    vision_width: int = 0
    vision_layers: int = 0
    embed_dim: int = 0
    text_width: int = 0
    text_layers: int = 0
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory", memory_mode(self.memory))
        if self.temporal not in TEMPORAL_NAMES:
            raise ValueError(f"unknown tfclip.temporal '{self.temporal}'; expected one of {', '.join(TEMPORAL_NAMES)}")
        if self.ssp not in SSP_NAMES:
            raise ValueError(f"unknown tfclip.ssp '{self.ssp}'; expected one of {', '.join(SSP_NAMES)}")
        if self.ssp_residual not in SSP_RESIDUALS:
            raise ValueError(f"unknown tfclip.ssp_residual '{self.ssp_residual}'; expected one of "
                             f"{', '.join(SSP_RESIDUALS)}")
        if self.ssp_residual == "pre-release" and self.ssp == "released":
            raise ValueError("tfclip.ssp_residual 'pre-release' is the paper SSP's (tfclip.ssp paper); the released "
                             "SSP returns a prompt, not the updated memory")
        if self.ssp_layers < 1:
            raise ValueError(f"tfclip.ssp_layers must be at least 1; got {self.ssp_layers}")

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_kwargs(cls, **options: Any) -> "ModelOptions":
        """``ModelOptions(**options)``, with a ``TypeError`` that lists the valid names for unknown ones."""
        unknown = sorted(set(options) - set(cls.names()))
        if unknown:
            raise TypeError(f"unknown TF-CLIP model option(s) {', '.join(unknown)}; valid options: "
                            f"{', '.join(cls.names())}")
        return cls(**options)

    def as_dict(self) -> Dict[str, Any]:
        """The options as keyword arguments of ``build_tfclip``."""
        return asdict(self)
