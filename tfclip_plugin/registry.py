"""What ``import tfclip_plugin`` puts into torchreid's registries, and the builders torchreid calls.

- :func:`register`: the plugin's video and image datasets and the ``tfclip_vit`` / ``tfclip_rn50`` builders
  (idempotent).
- The builders serve callers the plugin does not control (torchreid's ``build_model`` from its own
  ``scripts/main.py``, ``FeatureExtractor``, trackers that build torchreid models by name). They take their
  settings from the *active* config (``config.set_active_config``) and their keyword arguments; the plugin's
  own runs never go through them (``engine.build.build_model`` builds from an explicit config).
- :func:`register_checkpoint`: a model name whose builder returns a trained checkpoint's architecture with its
  weights, so ``FeatureExtractor(model_name=name, model_path=path)`` or ``build_model(name, ...)`` gets the
  trained model with no call-stack inspection.
- Fallback for ``FeatureExtractor(model_name='tfclip_vit', model_path=ckpt)``: the builder finds the
  extractor's arguments up the call stack (``host.feature_extractor_arguments``) and builds the checkpoint's
  architecture (``interop.feature_extractor_model``). When a ``tfclip_*`` builder is asked for a one-class
  model outside any ``FeatureExtractor`` (a wrapper, or a subclass that does not call
  ``FeatureExtractor.__init__``), it warns: torchreid's ``load_pretrained_weights`` would then silently drop a
  trained checkpoint's heads, CLIP-Memory and camera table.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Dict

from . import host
from .config import active_config, model_options
from .models import ARCHITECTURES, TFCLIP, ModelOptions, build_tfclip

_CHECKPOINT_MODELS: Dict[str, str] = {}


def _options_from_active_config(overrides: Dict[str, Any]):
    cfg = active_config()
    options = model_options(cfg).as_dict()
    options.update({k: v for k, v in overrides.items() if k in options})
    rest = {k: v for k, v in overrides.items() if k not in options}
    height = rest.pop("height", cfg.data.height)
    width = rest.pop("width", cfg.data.width)
    num_cameras = max(1, int(rest.pop("num_cameras", cfg.tfclip.num_cameras)))
    if rest:
        ModelOptions.from_kwargs(**rest)  # raises the TypeError that lists the valid options
    return options, height, width, num_cameras


def torchreid_builder(name: str) -> Callable[..., TFCLIP]:
    """The torchreid registry builder of ``name`` ('tfclip_vit' | 'tfclip_rn50')."""

    def build(num_classes: int, loss: str = "softmax", pretrained: bool = True, use_gpu: bool = True,
              **kwargs: Any) -> TFCLIP:
        """torchreid builder: settings from the active config (``tfclip`` model keys, ``data.height/width``,
        ``tfclip.num_cameras``), overridden by ``kwargs`` (any of those names). ``use_gpu`` is ignored (the
        caller places the model). Inside ``FeatureExtractor`` it builds the checkpoint being loaded."""
        from .interop import feature_extractor_model

        extractor_model = feature_extractor_model(name, loss, pretrained)
        if extractor_model is not None:
            return extractor_model
        if num_classes == 1:
            warnings.warn(
                f"{name} built with num_classes=1 outside torchreid's FeatureExtractor: if trained weights are loaded "
                "next by name and shape (torchreid's load_pretrained_weights), the heads, CLIP-Memory and camera "
                "table of a trained checkpoint are dropped. Use tfclip_plugin.register_checkpoint(name, path) or "
                "tfclip_plugin.interop.build_from_checkpoint(path) to get the trained model.", stacklevel=2)
        options, height, width, num_cameras = _options_from_active_config(kwargs)
        return build_tfclip(name, num_classes, num_cameras, pretrained=pretrained, height=height, width=width,
                            loss=loss, **options)

    build.__name__ = f"build_{name}"
    return build


def register_checkpoint(name: str, path: str) -> str:
    """Register ``name`` in torchreid's model registry as the model trained in checkpoint ``path``.

    ``torchreid.models.build_model(name, num_classes=...)`` then returns that architecture with its weights,
    CLIP-Memory and camera table (``num_classes`` is ignored), and ``FeatureExtractor(model_name=name,
    model_path=path)`` extracts with it. The checkpoint is read now, so a bad file fails here. A name may be
    registered again for another checkpoint; the names of the registry's own models (torchreid's,
    ``tfclip_vit``, ``tfclip_rn50``) are refused.
    Returns ``name``.
    """
    from .interop import build_from_checkpoint, checkpoint_architecture

    factory = host.model_factory()
    if name in factory and name not in _CHECKPOINT_MODELS:
        raise ValueError(f"'{name}' is already a torchreid model name; choose another name for {path}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"register_checkpoint: checkpoint not found: {path}")
    checkpoint_architecture(path)

    def build(num_classes: int = 1, loss: str = "softmax", pretrained: bool = True, use_gpu: bool = True,
              **kwargs: Any) -> TFCLIP:
        return build_from_checkpoint(path, loss=loss)

    build.__name__ = f"build_{name}"
    factory[name] = build
    _CHECKPOINT_MODELS[name] = path
    return name


def register() -> None:
    """Register the plugin's datasets and model builders into torchreid (idempotent)."""
    from .data.datasets import CORRECTED_DATASETS, IMAGE_DATASETS, VIDEO_DATASETS

    for name, cls in VIDEO_DATASETS.items():
        host.register_video_dataset(name, cls)
    for name, cls in IMAGE_DATASETS.items():
        host.register_image_dataset(name, cls)
    for name, cls in CORRECTED_DATASETS.items():
        host.replace_video_dataset(name, cls)
    for name in ARCHITECTURES:
        host.register_model(name, torchreid_builder(name))
