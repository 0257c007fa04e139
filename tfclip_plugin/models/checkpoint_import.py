"""Loading trained weights into a model, one entry point per origin.

- :func:`load_tfclip_state_dict`: our own checkpoints (strict);
- :func:`load_official_checkpoint`: the official TF-CLIP checkpoints (three generations, below);
- :func:`load_clipreid_checkpoint`: Syliz517/CLIP-ReID checkpoints (its ``make_model_clipreid`` model, ViT-B/16 or
  RN50, with or without SIE) into a text-mode model (see its docstring);
- :func:`load_matching_weights`: torchreid's rule for any model (entries matching by name and shape), used for
  torchreid models and files written by torchreid's engines;
- :func:`load_weights`: reads a file (``weights_only=True``) and picks the right one of the above.

Official checkpoints are plain state dicts saved by the reference (AsuradaYuci/TF-CLIP, ``train.py`` saves
``model.state_dict()``):
- 'github': the GitHub code's names, ``SSP.*`` (released SSP) and ``TMD.resblocks.0.*``;
- 'mars-release': the MARS Baidu checkpoint, the same modules under ``prompts_generator.*`` and ``SAT.*``;
- 'pre-release': the LS-VID / iLIDS Baidu checkpoints, ``SAT.*`` and the paper SSP under ``prompts_generator.*``.
Their ``image_encoder.*`` maps to ``backbone.visual.*`` unchanged; ``classifier_proj_temp2`` (built but never
used by the reference) is skipped. SSP weights of the other SSP variant are skipped too (SSP is used in
training only, so any generation evaluates the same).
"""
from __future__ import annotations

import os
import re
from math import prod
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from torch import Tensor, nn

from ..files.checkpoint_file import load_checkpoint, state_dict_of
from .backbone import ResNetBackbone, grid_shape
from .ssp import PaperSSP, ReleasedSSP
from .temporal import TemporalMemoryDiffusion

StateDict = Mapping[str, Tensor]

_HEADS = ("cv_embed", "classifier2.", "classifier_proj.", "classifier_proj_temp.", "bottleneck.",
          "bottleneck_proj.", "bottleneck_proj_temp.", "bottleneck_proj_temp2.")
_TMD_BLOCK = re.compile(r"^(?:TMD|SAT)\.resblocks\.0\.(.+)$")
_SSP = re.compile(r"^(?:SSP|prompts_generator)\.(.+)$")
_RELEASED_SSP_TOP = {"memory_proj.": "video_in.", "text_proj.": "memory_in.", "out_proj.": "prompt_out.",
                     "norm.": "norm.", "alpha": "alpha"}
_LAYER = re.compile(r"^decoder\.(\d+)\.(self_attn|cross_attn|norm1|norm2|norm3|mlp)(\..+)$")
_RELEASED_NORMS = {"norm1": "self_attn_norm", "norm2": "cross_attn_norm", "norm3": "mlp_norm"}
_PAPER_NORMS = {"norm1": "cross_attn_norm", "norm3": "mlp_norm"}


def _read(source: Union[str, os.PathLike, StateDict], what: str) -> Dict[str, Tensor]:
    """A state dict from a path (``weights_only=True``) or a mapping; unwraps ``state_dict``, strips ``module.``."""
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{what}: no such file '{source}'")
        source = load_checkpoint(str(source))
    if isinstance(source, Mapping) and isinstance(source.get("state_dict"), Mapping):
        source = source["state_dict"]
    if not isinstance(source, Mapping) or not source or not all(isinstance(v, Tensor) for v in source.values()):
        raise ValueError(f"{what}: expected a state dict of tensors (or a dict with one under 'state_dict')")
    return state_dict_of(source)


def checkpoint_generation(state_dict: StateDict) -> str:
    """'github' | 'mars-release' | 'pre-release' from the module names of an official checkpoint."""
    if any(k.startswith(("SSP.", "TMD.")) for k in state_dict):
        return "github"
    if any(k.startswith("prompts_generator.decoder.") and ".self_attn." in k for k in state_dict):
        return "mars-release"
    if any(k.startswith(("prompts_generator.", "SAT.")) for k in state_dict):
        return "pre-release"
    if any(k.startswith("image_encoder.") for k in state_dict):
        return "github"
    raise ValueError("not an official TF-CLIP checkpoint: no image_encoder.*, SSP/prompts_generator.* or "
                     "TMD/SAT.* keys")


def _ssp_key(rest: str, released: bool) -> Optional[str]:
    """A reference SSP sub-key -> ours for the given variant, or None when the variant has no such key."""
    layer = _LAYER.match(rest)
    if layer:
        index, part, tail = layer.groups()
        if part.startswith("norm"):
            part = (_RELEASED_NORMS if released else _PAPER_NORMS).get(part)
        elif part == "self_attn" and not released:
            part = None
        return f"layers.{index}.{part}{tail}" if part else None
    if released:
        for old, new in _RELEASED_SSP_TOP.items():
            if rest.startswith(old):
                return new + rest[len(old):]
        return None
    return "video_norm." + rest[len("norm."):] if rest.startswith("norm.") else None


def _official_key(key: str, ssp_variant: Optional[str], ssp_reason: str) -> Tuple[Optional[str], str]:
    """Reference key -> (our key or None, reason when None); ``ssp_variant`` is the SSP both sides share
    (None: skip the SSP weights for ``ssp_reason``)."""
    if key.startswith("image_encoder."):
        return "backbone.visual." + key[len("image_encoder."):], ""
    if key.startswith("classifier_proj_temp2."):
        return None, "unused by the reference (built and saved, never called)"
    if key.startswith(_HEADS):
        return key, ""
    block = _TMD_BLOCK.match(key)
    if block:
        rest = block.group(1)
        return ("temporal." + rest if rest.startswith("message_") else "temporal.diffusion." + rest), ""
    ssp = _SSP.match(key)
    if ssp:
        if ssp_variant is None:
            return None, ssp_reason
        ours = _ssp_key(ssp.group(1), ssp_variant == "released")
        return ("ssp." + ours, "") if ours else (None, "not a TF-CLIP module")
    return None, "not a TF-CLIP module"


def _mismatch_hint(key: str, model: nn.Module) -> str:
    if key.startswith("classifier") or key.startswith("memory") or key.endswith("cls_ctx"):
        return f" (the model has {getattr(model, 'num_classes', '?')} classes)"
    if key == "cv_embed":
        return f" (the model has {getattr(model, 'num_cameras', '?')} SIE cameras; set tfclip.num_cameras)"
    if key.endswith("positional_embedding"):
        return " (another input size or tfclip.stride)"
    return " (another architecture or width)"


def _check_shapes(pairs: List[Tuple[str, Tensor]], target: Mapping[str, Tensor], model: nn.Module,
                  what: str) -> None:
    bad = [(k, v) for k, v in pairs if tuple(v.shape) != tuple(target[k].shape)]
    if bad:
        key, value = bad[0]
        raise ValueError(f"{what}: {key} has shape {tuple(value.shape)} in the checkpoint but "
                         f"{tuple(target[key].shape)} in the model{_mismatch_hint(key, model)}"
                         + (f"; {len(bad) - 1} more mismatched" if len(bad) > 1 else ""))


def load_official_checkpoint(model: nn.Module, path_or_state_dict: Union[str, os.PathLike, StateDict]
                             ) -> Dict[str, Any]:
    """Load an official TF-CLIP checkpoint into ``model`` (a ``TFCLIP``); returns a report.

    Report: ``generation`` ('github' | 'mars-release' | 'pre-release'), ``loaded`` (number of tensors),
    ``skipped`` ({checkpoint key: reason}), ``missing`` (model keys the checkpoint did not provide, e.g. the
    CLIP-Memory buffers, or the SSP of another variant). Raises ValueError when the checkpoint belongs to another
    architecture, class count, camera count or input size.
    """
    what = "official TF-CLIP checkpoint"
    state_dict = _read(path_or_state_dict, what)
    generation = checkpoint_generation(state_dict)
    target = model.state_dict()
    checkpoint_ssp = "paper" if generation == "pre-release" else "released"
    model_ssp = {PaperSSP: "paper", ReleasedSSP: "released"}.get(type(getattr(model, "ssp", None)))
    shared_ssp = checkpoint_ssp if checkpoint_ssp == model_ssp else None
    ssp_reason = ("the model has no SSP (tfclip.ssp 'none' or tfclip.memory False)" if model_ssp is None
                  else "the model's tfclip.ssp is not this checkpoint's SSP variant")
    mapped: Dict[str, Tensor] = {}
    skipped: Dict[str, str] = {}
    for key, value in state_dict.items():
        ours, reason = _official_key(key, shared_ssp, ssp_reason)
        if ours is None:
            skipped[key] = reason
        elif ours in target:
            mapped[ours] = value
        elif ours.startswith("backbone."):
            raise ValueError(f"{what}: the image encoder does not fit the model's backbone: {key} "
                             f"{tuple(value.shape)} has no counterpart (a checkpoint of another architecture?)")
        else:
            skipped[key] = _absent_reason(ours, model)
    if not any(k.startswith("backbone.") for k in mapped):
        raise ValueError(f"{what}: no image_encoder.* weights found")
    _check_shapes(list(mapped.items()), target, model, what)
    model.load_state_dict(mapped, strict=False)
    return {"generation": generation, "loaded": len(mapped), "skipped": skipped,
            "missing": sorted(set(target) - set(mapped))}


def _absent_reason(ours: str, model: nn.Module) -> str:
    module = ours.split(".")[0]
    if module == "temporal" or "temp" in module:
        return "TMD weights; the model's tfclip.temporal is not 'tmd'" \
            if not isinstance(getattr(model, "temporal", None), TemporalMemoryDiffusion) else "not in the model"
    if module == "cv_embed":
        return "the model has no SIE (tfclip.sie False)"
    return "not in the model"


def _key_mismatch(target: StateDict, loaded: StateDict) -> str:
    """'' when ``loaded`` has exactly ``target``'s keys; else its missing and unexpected keys (four of each,
    ' ...' when there are more), for an error message."""
    missing, unexpected = sorted(set(target) - set(loaded)), sorted(set(loaded) - set(target))
    parts = [f"missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else "") if missing else "",
             f"unexpected {', '.join(unexpected[:4])}" + (" ..." if len(unexpected) > 4 else "") if unexpected else ""]
    return "; ".join(p for p in parts if p)


def load_tfclip_state_dict(model: nn.Module, state_dict: Union[str, os.PathLike, StateDict]) -> None:
    """Load one of our own checkpoints strictly (a path, a state dict, or torchreid's {'state_dict': ...}).

    Raises ValueError naming the first mismatch when it was saved from another architecture, variant,
    class count or camera count.
    """
    what = "TF-CLIP checkpoint"
    loaded = _read(state_dict, what)
    target = model.state_dict()
    mismatch = _key_mismatch(target, loaded)
    if mismatch:
        raise ValueError(f"{what} does not match the model (another architecture or tfclip.* variant?): {mismatch}")
    _check_shapes(list(loaded.items()), target, model, what)
    model.load_state_dict(loaded)


def load_matching_weights(model: nn.Module, state_dict: StateDict) -> Dict[str, list]:
    """Load the entries whose name and shape match ``model`` (torchreid's ``load_pretrained_weights`` rule).

    Returns ``{'loaded': [...], 'discarded': [...] (in the file, not loadable), 'missing': [...] (kept as is)}``.
    """
    own = model.state_dict()
    loaded = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(loaded, strict=False)
    return {
        "loaded": sorted(loaded),
        "discarded": sorted(set(state_dict) - set(loaded)),
        "missing": sorted(set(own) - set(loaded)),
    }


_CLIPREID_RENAMED = {"image_encoder.": "backbone.visual.", "prompt_learner.": "text.prompt_learner.",
                     "text_encoder.": "text.text_encoder.", "classifier.": "classifier2."}
_TABLE_BUFFERS = ("memory", "memory_ready")


def is_clipreid_state_dict(state_dict: StateDict) -> bool:
    """True for a CLIP-ReID model (``make_model_clipreid``): ``image_encoder.*`` and ``prompt_learner.*`` tensors."""
    return any(k.startswith("image_encoder.") for k in state_dict) and "prompt_learner.cls_ctx" in state_dict


def clipreid_backbone_architecture(state_dict: StateDict) -> str:
    """'rn50' or 'vit': the image encoder of a CLIP-ReID state dict (the CNN has an attention pool)."""
    return "rn50" if any(k.startswith("image_encoder.attnpool.") for k in state_dict) else "vit"


def _clipreid_key(key: str) -> str:
    for old, new in _CLIPREID_RENAMED.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _refuse_other_origins(state_dict: StateDict, what: str) -> None:
    if is_clipreid_state_dict(state_dict):
        return
    if is_tfclip_state_dict(state_dict):
        raise ValueError(f"{what}: this is a tfclip_plugin checkpoint (backbone.visual.*, memory), not a CLIP-ReID "
                         f"one; load it with load_tfclip_state_dict or model.load_weights")
    if any(k.startswith(("SSP.", "TMD.", "SAT.", "prompts_generator.", "classifier2.")) for k in state_dict):
        raise ValueError(f"{what}: this is an official TF-CLIP checkpoint (SSP/TMD/classifier2 keys), not a CLIP-ReID "
                         f"one; load it with load_official_checkpoint")
    if any(k.startswith("image_encoder.") for k in state_dict) and "classifier.weight" in state_dict:
        raise ValueError(f"{what}: a CLIP-ReID baseline (model/make_model.py: image encoder and heads, no "
                         f"prompt_learner.* / text_encoder.*) is not supported; only CLIP-ReID models with their "
                         f"text branch are")
    raise ValueError(f"{what}: not a CLIP-ReID checkpoint (expected image_encoder.*, prompt_learner.cls_ctx, "
                     f"text_encoder.*, classifier.weight keys)")


def vit_stride_for(rows: int, height: int, width: int) -> Optional[int]:
    """The ViT patch stride whose grid at ``height`` x ``width`` has ``rows`` - 1 cells, or None."""
    return next((s for s in range(16, 0, -1) if rows - 1 == prod(grid_shape(height, width, s))), None)


def _check_clipreid_fit(model: nn.Module, state_dict: StateDict, what: str) -> None:
    """Errors naming the setting to change when ``state_dict`` (CLIP-ReID names) cannot go into ``model``."""
    arch = clipreid_backbone_architecture(state_dict)
    model_arch = "rn50" if isinstance(model.backbone, ResNetBackbone) else "vit"
    if arch != model_arch:
        names = {"vit": "a ViT (tfclip_vit)", "rn50": "an RN50 (tfclip_rn50)"}
        raise ValueError(f"{what}: the checkpoint's image encoder is {names[arch]}, the model's {names[model_arch]}")
    if getattr(model, "memory_mode", None) != "text" or model.temporal is not None or model.ssp is not None:
        raise ValueError(f"{what}: CLIP-ReID's model is a text-mode model without temporal module or SSP: build it "
                         f"with memory='text', temporal='tap', ssp='none' (tfclip.memory text, tfclip.temporal tap, "
                         f"tfclip.ssp none)")
    classes = int(state_dict["classifier.weight"].shape[0]) if "classifier.weight" in state_dict else None
    if classes is not None and classes != model.num_classes:
        raise ValueError(f"{what}: it was trained on {classes} identities (classifier.weight, prompt_learner.cls_ctx) "
                         f"but the model has {model.num_classes} classes; build it with num_classes={classes}")
    cameras = state_dict.get("cv_embed")
    if cameras is None and model.cv_embed is not None:
        raise ValueError(f"{what}: it has no SIE camera table (cv_embed; trained without MODEL.SIE_CAMERA) but the "
                         f"model has one; build it with sie=False (tfclip.sie False)")
    if cameras is not None and model.cv_embed is None:
        raise ValueError(f"{what}: it has an SIE camera table of {cameras.shape[0]} cameras (cv_embed) but the model "
                         f"has none; build it with sie=True and num_cameras={cameras.shape[0]}")
    if cameras is not None and cameras.shape[0] != model.num_cameras:
        raise ValueError(f"{what}: its SIE table has {cameras.shape[0]} cameras (cv_embed) but the model's "
                         f"{model.num_cameras}; build it with num_cameras={cameras.shape[0]} (tfclip.num_cameras)")
    grid_key = "image_encoder.attnpool.positional_embedding" if arch == "rn50" else "image_encoder.positional_embedding"
    ours = model.state_dict()[_clipreid_key(grid_key)]
    if grid_key in state_dict and state_dict[grid_key].shape[0] != ours.shape[0]:
        rows, (height, width) = int(state_dict[grid_key].shape[0]), model.backbone.image_size
        stride = vit_stride_for(rows, height, width) if arch == "vit" else None
        hint = (f"at {height}x{width} that is tfclip.stride {stride}" if stride else
                f"another input size than the model's {height}x{width} (data.height / data.width)"
                + ("" if arch == "rn50" else " or tfclip.stride"))
        raise ValueError(f"{what}: {grid_key} has {rows} rows ({rows - 1} grid cells) but the model's "
                         f"{ours.shape[0]}: {hint}")


def load_clipreid_checkpoint(model: nn.Module, path_or_state_dict: Union[str, os.PathLike, StateDict]
                             ) -> Dict[str, Any]:
    """Load a Syliz517/CLIP-ReID checkpoint (``make_model_clipreid``'s ``state_dict()``, ``module.`` prefixes
    stripped; a path is read with ``weights_only=True``) into ``model``, strictly; returns a report.

    ``model``: a ``TFCLIP`` built as CLIP-ReID's model: ``memory='text', temporal='tap', ssp='none'``, the same
    architecture, class count, SIE camera count (``sie=False`` for files without ``cv_embed``), input size and
    stride (the positional embedding's rows). Names: ``image_encoder.*`` -> ``backbone.visual.*``,
    ``prompt_learner.*`` / ``text_encoder.*`` -> ``text.*``, ``classifier`` -> ``classifier2``; ``cv_embed``,
    ``classifier_proj``, ``bottleneck``, ``bottleneck_proj`` keep theirs. CLIP-ReID files hold no class table:
    the identities' text features are computed from the loaded prompts and installed (``set_memory``), as its
    stage 2 does before training.

    Report: ``origin`` 'CLIP-ReID', ``architecture`` ('vit' | 'rn50'), ``loaded`` (tensors), ``num_classes``,
    ``num_cameras`` (0 without SIE). Raises ValueError naming what to change when the file belongs to another
    architecture, class count, camera count, input size or stride, or is not a CLIP-ReID file (TF-CLIP files,
    ours, CLIP-ReID baselines without a text branch).
    """
    what = "CLIP-ReID checkpoint"
    state_dict = _read(path_or_state_dict, what)
    _refuse_other_origins(state_dict, what)
    _check_clipreid_fit(model, state_dict, what)
    mapped = {_clipreid_key(k): v for k, v in state_dict.items()}
    target = {k: v for k, v in model.state_dict().items() if k not in _TABLE_BUFFERS}
    mismatch = _key_mismatch(target, mapped)
    if mismatch:
        raise ValueError(f"{what} does not match the model (another tower size?): {mismatch}")
    _check_shapes(list(mapped.items()), target, model, what)
    model.load_state_dict(mapped, strict=False)
    model.set_memory(model.identity_text_features())
    cameras = state_dict.get("cv_embed")
    return {"origin": "CLIP-ReID", "architecture": clipreid_backbone_architecture(state_dict), "loaded": len(mapped),
            "num_classes": model.num_classes, "num_cameras": int(cameras.shape[0]) if cameras is not None else 0}


def is_tfclip_state_dict(state_dict: StateDict) -> bool:
    """True for our own TF-CLIP weights (a CLIP-Memory buffer and ``backbone.visual.*`` tensors)."""
    return "memory" in state_dict and any(key.startswith("backbone.visual.") for key in state_dict)


def load_weights(model: nn.Module, path: str) -> Dict[str, Any]:
    """``model.load_weights``: read ``path`` with ``weights_only=True`` and load it into ``model``.

    A TF-CLIP model takes our checkpoints strictly (:func:`load_tfclip_state_dict`), CLIP-ReID files
    (:func:`load_clipreid_checkpoint`) and official TF-CLIP files (:func:`load_official_checkpoint`); any other
    model takes the entries that match by name and shape (:func:`load_matching_weights`), and a file with no such
    entry is an error. Returns a report whose ``loaded`` is the number of tensors loaded.
    """
    state = state_dict_of(load_checkpoint(path))
    if hasattr(model, "set_memory"):
        if is_tfclip_state_dict(state):
            load_tfclip_state_dict(model, state)
            return {"origin": "tfclip_plugin", "loaded": len(state)}
        try:
            if is_clipreid_state_dict(state):
                return load_clipreid_checkpoint(model, state)
            return {"origin": "official TF-CLIP", **load_official_checkpoint(model, state)}
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    report = load_matching_weights(model, state)
    if not report["loaded"]:
        raise ValueError(f"{path}: no entry matches the model {type(model).__name__} by name and shape")
    return {"origin": "name and shape match", "loaded": len(report["loaded"]),
            "discarded": len(report["discarded"]), "missing": len(report["missing"])}
