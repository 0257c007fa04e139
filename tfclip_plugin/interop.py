"""TF-CLIP models rebuilt from a checkpoint file alone, and inside torchreid's ``FeatureExtractor``.

torchreid's ``FeatureExtractor(model_name, model_path, image_size, ...)`` builds the model with
``num_classes=1`` and then loads ``model_path`` with ``load_pretrained_weights``, which silently drops every entry
whose shape differs from the fresh model's: the heads, the CLIP-Memory buffer and the SIE table of a trained
model would be lost, and a tower of another width would stay random. So when a ``tfclip_*`` builder is called
from a ``FeatureExtractor`` (``host.feature_extractor_arguments``), :func:`feature_extractor_model` builds the
architecture stored in that checkpoint (the run config our engine writes into it, the class and camera counts
of its weights), loads it strictly, and refuses an ``image_size`` other than the one the model was trained at.
:func:`allow_torchreid_checkpoints` lets torchreid's own loader read the checkpoints torchreid's engines write.

Syliz517/CLIP-ReID checkpoints (``clip_market1501.pt`` and the like: a bare state dict, no run config) are
accepted too: :func:`clipreid_architecture` reads the architecture from the tensors (ViT or RN50, tower sizes,
identities, SIE cameras, the patch stride from the positional embedding's rows at the input size) and the model
is built as CLIP-ReID's (``memory='text', temporal='tap', ssp='none'``) and loaded with
``models.load_clipreid_checkpoint``. The input size comes from the ``FeatureExtractor``'s ``image_size``, or
elsewhere from the active config (``data.height`` / ``data.width``); ``tfclip.sie_coe`` (CLIP-ReID's
``SIE_COE``, not stored in its files) from the active config too.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from yacs.config import CfgNode as CN

from . import host
from .config import active_config, get_default_config, load_config_yaml, model_options
from .files.checkpoint_file import load_checkpoint, numpy_scalar_globals, state_dict_of
from .models import (
    ARCHITECTURES, TFCLIP, ModelOptions, build_tfclip, is_clipreid_state_dict, load_clipreid_checkpoint,
    load_tfclip_state_dict,
)
from .models.checkpoint_import import clipreid_backbone_architecture, vit_stride_for

CLIPREID_NORMALISATION = {  # CLIP-ReID configs/person/vit_clipreid.yml:20-21, cnn_clipreid.yml:17-18
    "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "rn50": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class CheckpointArchitecture:
    """What a TF-CLIP checkpoint was built with.

    ``options`` holds the model options (``ModelOptions`` fields); ``from_config`` is False for files without our
    run config (e.g. written by torchreid's own engines), whose options, input size and normalisation then come
    from the active plugin config; the class and camera counts always come from the weights. ``origin`` is
    'tfclip_plugin' or 'CLIP-ReID' (architecture from the tensors, normalisation of CLIP-ReID's person recipes).
    """

    name: str
    num_classes: int
    num_cameras: int
    height: int
    width: int
    options: Dict[str, Any]
    norm_mean: Tuple[float, ...]
    norm_std: Tuple[float, ...]
    from_config: bool
    origin: str = "tfclip_plugin"


def _read(path: str) -> Tuple[Dict[str, Tensor], Optional[CN]]:
    """(state dict, run config or None) of one of our checkpoint files or of a CLIP-ReID file (no config), read
    with ``weights_only=True``."""
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
    state = state_dict_of(checkpoint)
    if is_clipreid_state_dict(state):
        return state, None
    towers = ("backbone.visual.positional_embedding", "backbone.visual.attnpool.positional_embedding")
    if "memory" not in state or not any(key in state for key in towers):
        raise ValueError(
            f"{path}: not a tfclip_plugin TF-CLIP checkpoint (its state dict has no 'memory' buffer and "
            "'backbone.visual.*' weights) nor a CLIP-ReID one (image_encoder.*, prompt_learner.*); official "
            "TF-CLIP files load with tfclip_plugin.models.load_official_checkpoint(model, path)")
    config = checkpoint.get("config")
    if config is None:
        return state, None
    if not isinstance(config, str):
        raise ValueError(f"{path}: its 'config' entry should be the run config as a YAML string, "
                         f"got {type(config).__name__}")
    return state, load_config_yaml(config)


def _blocks(state: Dict[str, Tensor], prefix: str) -> int:
    """How many numbered children ``prefix<i>.`` the state dict has (transformer blocks, ResNet blocks)."""
    return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})


def clipreid_architecture(path: str, state: Dict[str, Tensor], name: Optional[str], height: int, width: int,
                          sie_coe: float = 1.0) -> CheckpointArchitecture:
    """The architecture of a CLIP-ReID state dict, read from its tensors, at input ``height`` x ``width``.

    Raises ValueError naming the file when ``name`` is another architecture, or when no patch stride (ViT) or
    feature-map size (RN50) fits the positional embedding at that input size.
    """
    arch = clipreid_backbone_architecture(state)
    resolved = {"vit": "tfclip_vit", "rn50": "tfclip_rn50"}[arch]
    if name is not None and name != resolved:
        raise ValueError(f"{path} holds a CLIP-ReID {arch.upper()} model; build it as '{resolved}', not '{name}'")
    options = {**ModelOptions().as_dict(), "memory": "text", "temporal": "tap", "ssp": "none",
               "sie": "cv_embed" in state, "sie_coe": float(sie_coe),
               "embed_dim": int(state["text_encoder.text_projection"].shape[1]),
               "text_width": int(state["text_encoder.positional_embedding"].shape[1]),
               "text_layers": _blocks(state, "text_encoder.transformer.resblocks.")}
    if arch == "vit":
        rows = int(state["image_encoder.positional_embedding"].shape[0])
        stride = vit_stride_for(rows, height, width)
        if stride is None:
            raise ValueError(f"{path}: its positional embedding ({rows} rows) fits no patch stride at "
                             f"{height}x{width}; use the input size it was trained at (CLIP-ReID's person recipes: "
                             "256x128)")
        options.update(stride=stride, vision_width=int(state["image_encoder.conv1.weight"].shape[0]),
                       vision_layers=_blocks(state, "image_encoder.transformer.resblocks."))
    else:
        rows = int(state["image_encoder.attnpool.positional_embedding"].shape[0])
        if rows != (height // 16) * (width // 16) + 1:
            raise ValueError(f"{path}: its attention pool has {rows} positions, which a {height}x{width} input (a "
                             f"{height // 16}x{width // 16} map) does not give; use the input size it was trained at "
                             "(CLIP-ReID's person recipes: 256x128)")
        stages = tuple(_blocks(state, f"image_encoder.layer{i}.") for i in range(1, 5))
        if stages != (3, 4, 6, 3) and len(set(stages)) != 1:
            raise ValueError(f"{path}: a ModifiedResNet with {stages} blocks per stage can only be built as RN50 "
                             "(3, 4, 6, 3) or with the same count in every stage")
        options.update(vision_width=int(state["image_encoder.conv3.weight"].shape[0]),
                       vision_layers=0 if stages == (3, 4, 6, 3) else stages[0])
    cameras = state.get("cv_embed")
    mean, std = CLIPREID_NORMALISATION[arch]
    return CheckpointArchitecture(
        name=resolved, num_classes=int(state["classifier.weight"].shape[0]),
        num_cameras=int(cameras.shape[0]) if cameras is not None else 1, height=height, width=width,
        options=options, norm_mean=mean, norm_std=std, from_config=False, origin="CLIP-ReID")


def _architecture(path: str, state: Dict[str, Tensor], cfg: Optional[CN], name: Optional[str],
                  fallback: CN, size: Optional[Tuple[int, int]] = None) -> CheckpointArchitecture:
    if is_clipreid_state_dict(state):
        height, width = size or (int(fallback.data.height), int(fallback.data.width))
        return clipreid_architecture(path, state, name, height, width, fallback.tfclip.sie_coe)
    source = cfg if cfg is not None else fallback
    saved_name = str(cfg.model.name) if cfg is not None and "model" in cfg else None
    if saved_name is not None and saved_name not in ARCHITECTURES:
        raise ValueError(f"{path} holds a '{saved_name}' model, not a TF-CLIP one ({', '.join(ARCHITECTURES)})")
    if name is not None and saved_name is not None and name != saved_name:
        raise ValueError(f"{path} holds a '{saved_name}' model; build it with model_name='{saved_name}', "
                         f"not '{name}'")
    resolved = name or saved_name
    if resolved is None:
        raise ValueError(f"{path} stores no run config: pass the model name ({', '.join(ARCHITECTURES)})")
    defaults = get_default_config()
    saved = source.get("tfclip", CN())
    options = {key: saved.get(key, defaults.tfclip[key]) for key in ModelOptions.names()}
    options["grad_checkpointing"] = False  # a training setting
    num_cameras = saved.get("num_cameras", defaults.tfclip.num_cameras)
    data = source.get("data", defaults.data)
    cv_embed = state.get("cv_embed")
    return CheckpointArchitecture(
        name=resolved,
        num_classes=int(state["memory"].shape[0]),
        num_cameras=int(cv_embed.shape[0]) if cv_embed is not None else max(1, int(num_cameras)),
        height=int(data.get("height", defaults.data.height)),
        width=int(data.get("width", defaults.data.width)),
        options=options,
        norm_mean=tuple(float(v) for v in data.get("norm_mean", defaults.data.norm_mean)),
        norm_std=tuple(float(v) for v in data.get("norm_std", defaults.data.norm_std)),
        from_config=cfg is not None,
    )


def checkpoint_architecture(path: str, name: Optional[str] = None) -> CheckpointArchitecture:
    """The architecture of one of our checkpoints (``name`` is needed only for files without a run config)."""
    state, cfg = _read(path)
    return _architecture(path, state, cfg, name, active_config())


def _build(arch: CheckpointArchitecture, height: int, width: int, loss: str) -> TFCLIP:
    options = dict(arch.options)
    return build_tfclip(arch.name, arch.num_classes, arch.num_cameras, pretrained=False, height=height,
                        width=width, loss=loss, **options)


def _load(model: TFCLIP, state: Dict[str, Tensor], path: str, arch: CheckpointArchitecture) -> TFCLIP:
    try:
        if arch.origin == "CLIP-ReID":
            load_clipreid_checkpoint(model, state)
            return model
        load_tfclip_state_dict(model, state)
    except ValueError as exc:
        hint = "" if arch.from_config else (
            "; the file stores no run config, so the model was built from the active plugin config: activate the "
            "config it was trained with (tfclip_plugin.config.set_active_config)")
        raise ValueError(f"{path}: {exc}{hint}") from exc
    return model


def build_from_checkpoint(path: str, name: Optional[str] = None, loss: str = "softmax") -> TFCLIP:
    """The model a checkpoint was trained as, with its weights, class table and SIE table (strict load).

    Architecture, input size and variant come from the run config stored in the file (our engine's
    checkpoints); for files without one, from the active plugin config and ``name``; for CLIP-ReID files from
    their tensors (:func:`clipreid_architecture`) at the active config's input size. The model is in train mode,
    as built; call ``eval()`` for features.
    """
    state, cfg = _read(path)
    arch = _architecture(path, state, cfg, name, active_config())
    return _load(_build(arch, arch.height, arch.width, loss), state, path, arch)


def _image_size(value: Sequence[int]) -> Tuple[int, int]:
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"FeatureExtractor image_size must be (height, width), got {value!r}") from exc
    return height, width


def _warn_on_normalisation(arch: CheckpointArchitecture, path: str, arguments: Dict[str, Any]) -> None:
    mean = [float(v) for v in arguments["pixel_mean"] or ()]
    std = [float(v) for v in arguments["pixel_std"] or ()]
    same = bool(arguments["pixel_norm"]) and len(mean) == len(arch.norm_mean) == len(std) == len(arch.norm_std) \
        and np.allclose(mean, arch.norm_mean) and np.allclose(std, arch.norm_std)
    if not same:
        given = f"pixel_mean={mean}, pixel_std={std}" if arguments["pixel_norm"] else "pixel_norm=False"
        warnings.warn(f"{path} was trained on images normalised with mean {list(arch.norm_mean)} and std "
                      f"{list(arch.norm_std)}; this FeatureExtractor uses {given}", stacklevel=2)


def feature_extractor_model(name: str, loss: str = "softmax", pretrained: bool = True) -> Optional[TFCLIP]:
    """The model for a ``FeatureExtractor(model_name=name, ...)`` being constructed, or None outside one.

    With a ``model_path`` file: that checkpoint's architecture with its weights (see
    :func:`build_from_checkpoint`; a CLIP-ReID file is built for the extractor's ``image_size``); a model trained
    at another input size than the extractor's ``image_size`` raises ValueError (its positional embedding and the
    features depend on the size). Without one: the active config's ``tfclip`` options at the extractor's
    ``image_size``, one class.
    """
    arguments = host.feature_extractor_arguments()
    if arguments is None:
        return None
    height, width = _image_size(arguments["image_size"])
    path = arguments["model_path"]
    if path and os.path.isfile(path):
        state, cfg = _read(path)
        arch = _architecture(path, state, cfg, name, active_config(), size=(height, width))
        if arch.origin == "CLIP-ReID":
            _warn_on_normalisation(arch, path, arguments)
        if arch.from_config:
            if (arch.height, arch.width) != (height, width):
                raise ValueError(
                    f"{path} was trained at {arch.height}x{arch.width} but FeatureExtractor resizes crops to "
                    f"{height}x{width}; pass image_size=({arch.height}, {arch.width})")
            _warn_on_normalisation(arch, path, arguments)
        return _load(_build(arch, height, width, loss), state, path, arch)
    cfg = active_config()
    num_cameras = max(1, int(cfg.tfclip.num_cameras))
    return build_tfclip(name, 1, num_cameras, pretrained=pretrained, height=height, width=width, loss=loss,
                        **model_options(cfg).as_dict())


def allow_torchreid_checkpoints() -> None:
    """Let ``torch.load``'s default ``weights_only=True`` (torch >= 2.6) read the files torchreid's
    ``Engine.save_model`` writes, whose ``rank1`` is a numpy float32 scalar: numpy's scalar reconstruction and
    float dtypes become allowed globals, process-wide (``torch.serialization.add_safe_globals``), as
    ``host.alias_upstream_modules`` a side effect for launchers of torchreid's scripts, never done on import.
    """
    torch.serialization.add_safe_globals(numpy_scalar_globals())
