"""Pretrained CLIP weights for the visual and text towers (``tfclip.clip_weights``).

Sources:
- the OpenAI TorchScript archive (``ViT-B-16.pt``, ``RN50.pt``, what OpenAI's ``clip`` package downloads):
  read with ``torch.jit.load`` on CPU. This is the one path that does not use ``weights_only=True``:
  TorchScript archives cannot be read that way, so only point it at files you trust;
- a plain state dict or an open_clip checkpoint (``.pt``/``.bin``/``.pth`` or ``.safetensors``, keys with or
  without the ``visual.`` prefix, optionally wrapped in ``state_dict`` or prefixed ``module.``): read with
  ``weights_only=True`` through open_clip's ``load_state_dict``;
- ``'openai'``: open_clip's download of OpenAI's weights (needs network access).

The grid positional embedding (ViT ``positional_embedding``, CNN ``attnpool.positional_embedding``) is resized
bilinearly with ``align_corners=False`` and no antialiasing, as the reference does (open_clip's
``resize_pos_embed`` is bicubic with antialias and gives different values). Weights end up fp32
(OpenAI's are stored in fp16).

The text tower (``token_embedding.weight``, ``positional_embedding``, ``transformer.*``, ``ln_final.*``,
``text_projection``: top-level keys in OpenAI's and open_clip's CLIP, or under ``text.``) is read from the same
sources by :func:`read_clip_text_state_dict` and loaded into a ``text.TextBranch`` by
:func:`load_clip_text_weights`: the token embedding only feeds the prompt learner's frozen template embeddings.
"""
from __future__ import annotations

import math
import os
import warnings
import zipfile
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .backbone import Backbone, ResNetBackbone
from .text import VOCAB_SIZE, TextBranch

OPENAI_MODEL_NAMES = {"vit": "ViT-B-16-quickgelu", "rn50": "RN50-quickgelu"}


def resize_grid_embedding(embedding: Tensor, grid: Tuple[int, int]) -> Tensor:
    """(1 + g*g, D) -> (1 + h*w, D): the first (CLS) row kept, the square g x g grid resized bilinearly.

    Rows are flattened row-major (h then w), as CLIP's patch order. Computed in fp32.
    """
    rows = embedding.shape[0] - 1
    side = math.isqrt(rows)
    if side * side != rows:
        raise ValueError(f"cannot resize a positional embedding of {rows + 1} rows: {rows} grid rows are not a "
                         f"square grid, and the model expects {grid[0]}x{grid[1]}")
    first, cells = embedding[:1].float(), embedding[1:].float()
    cells = cells.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    cells = F.interpolate(cells, size=grid, mode="bilinear", align_corners=False)
    return torch.cat([first, cells.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)], dim=0)


def is_torchscript_archive(path: str) -> bool:
    """True for a TorchScript zip archive (it holds ``constants.pkl`` and a ``code/`` folder)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def _visual_part(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Keys under ``visual.`` without the prefix; a dict with no such key is taken as visual-only."""
    visual = {k[len("visual."):]: v for k, v in state_dict.items() if k.startswith("visual.")}
    return visual or dict(state_dict)


def _as_fp32(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def _read_state_dict(source: str, arch: str) -> Dict[str, Tensor]:
    """Every tensor of the CLIP weights in ``source`` (a file or ``'openai'``), names as stored."""
    if source == "openai":
        import open_clip

        return open_clip.create_model(OPENAI_MODEL_NAMES[arch], pretrained="openai").state_dict()
    if not os.path.isfile(source):
        raise FileNotFoundError(f"tfclip.clip_weights: no such file '{source}' (expected an OpenAI TorchScript "
                                f"archive, a state dict, an open_clip checkpoint, or 'openai')")
    if is_torchscript_archive(source):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated")
            state_dict = torch.jit.load(source, map_location="cpu").state_dict()
    else:
        from open_clip.factory import load_state_dict

        state_dict = load_state_dict(source, weights_only=True)
    if not isinstance(state_dict, dict) or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise ValueError(f"tfclip.clip_weights: '{source}' does not hold a state dict of tensors")
    return state_dict


def _misfit(target: Dict[str, Tuple[int, ...]], state_dict: Dict[str, Tensor]) -> str:
    """'' when ``state_dict`` has exactly the keys and shapes of ``target`` (name -> shape); else the first
    mismatched shapes, missing and unexpected keys (three of each), for an error message."""
    missing = sorted(set(target) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(target))
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)}, model {target[k]}"
                  for k in sorted(set(target) & set(state_dict)) if tuple(state_dict[k].shape) != target[k]]
    return "; ".join(filter(None, [
        f"mismatched shapes: {', '.join(mismatched[:3])}" if mismatched else "",
        f"missing: {', '.join(missing[:3])}" if missing else "",
        f"unexpected: {', '.join(unexpected[:3])}" if unexpected else "",
    ]))


def load_clip_weights(backbone: Backbone, source: str, text: Optional[TextBranch] = None) -> None:
    """Load CLIP weights from ``source`` into ``backbone.visual`` (grid embedding resized to its grid) and, when
    ``text`` is given, the text tower of the same file into it (:func:`load_clip_text_state_dict`); the file is
    read once.

    Raises ValueError naming the source and the first mismatching keys when the weights belong to another
    architecture or size (e.g. RN50 weights for the ViT, or ViT-B/16 weights for a tiny tower).
    """
    arch = "rn50" if isinstance(backbone, ResNetBackbone) else "vit"
    everything = _read_state_dict(source, arch)
    if text is not None:
        load_clip_text_state_dict(text, _text_weights(everything, source), source)
    state_dict = _as_fp32(_visual_part(everything))
    target = backbone.visual.state_dict()
    grid_key = "attnpool.positional_embedding" if arch == "rn50" else "positional_embedding"
    if grid_key in state_dict and state_dict[grid_key].shape != target[grid_key].shape:
        if state_dict[grid_key].shape[-1] == target[grid_key].shape[-1]:
            state_dict[grid_key] = resize_grid_embedding(state_dict[grid_key], backbone.grid_size)
    details = _misfit({k: tuple(v.shape) for k, v in target.items()}, state_dict)
    if details:
        expected = (f"CLIP {'ModifiedResNet' if arch == 'rn50' else 'ViT'} weights with conv1.weight "
                    f"{tuple(target['conv1.weight'].shape)} and {len(target)} tensors")
        raise ValueError(f"tfclip.clip_weights '{source}' does not fit the backbone (expected {expected}): {details}")
    backbone.visual.load_state_dict(state_dict)
    backbone.float()


TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def _text_part(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The text tower's keys: under ``text.`` (open_clip's CustomTextCLIP) without the prefix, else top-level."""
    text = {k[len("text."):]: v for k, v in state_dict.items() if k.startswith("text.")}
    return {k: v for k, v in (text or state_dict).items() if k.startswith(TEXT_PREFIXES)}


def read_clip_text_state_dict(source: str, arch: str) -> Dict[str, Tensor]:
    """The text tower's weights (fp32, OpenAI names: ``token_embedding.weight``, ``positional_embedding``,
    ``transformer.resblocks.*``, ``ln_final.*``, ``text_projection``) from ``source``.

    Raises ValueError naming the source when it holds no text tower (e.g. a visual-only state dict).
    """
    return _text_weights(_read_state_dict(source, arch), source)


def _text_weights(everything: Dict[str, Tensor], source: str) -> Dict[str, Tensor]:
    """The fp32 text-tower weights among all tensors of ``source`` (see :func:`read_clip_text_state_dict`)."""
    state_dict = _text_part(everything)
    if "token_embedding.weight" not in state_dict:
        raise ValueError(f"tfclip.clip_weights '{source}' holds no CLIP text tower (expected token_embedding.weight, "
                         f"positional_embedding, transformer.*, ln_final.*, text_projection at the top level or "
                         f"under text.)")
    return _as_fp32(state_dict)


def load_clip_text_state_dict(branch: TextBranch, state_dict: Dict[str, Tensor], source: str) -> None:
    """Load text-tower weights with OpenAI names (see :func:`read_clip_text_state_dict`) into ``branch``:
    ``token_embedding.weight`` recomputes the prompt learner's template embeddings, the rest goes to
    ``branch.text_encoder``. ``cls_ctx`` is left as it is. Raises ValueError naming ``source`` and the first
    mismatching keys when the weights belong to another tower size."""
    width = branch.prompt_learner.token_prefix.shape[-1]
    target = {"token_embedding.weight": (VOCAB_SIZE, width),
              **{k: tuple(v.shape) for k, v in branch.text_encoder.state_dict().items()}}
    details = _misfit(target, state_dict)
    if details:
        encoder = branch.text_encoder
        expected = (f"CLIP text weights of width {width}, depth {len(encoder.transformer.resblocks)}, "
                    f"projection to {branch.embed_dim} and {len(target)} tensors")
        raise ValueError(f"tfclip.clip_weights '{source}' does not fit the text tower (expected {expected}): {details}")
    branch.prompt_learner.set_token_embedding(state_dict["token_embedding.weight"])
    branch.text_encoder.load_state_dict({k: v for k, v in state_dict.items() if k != "token_embedding.weight"})
    branch.float()


def load_clip_text_weights(branch: TextBranch, source: str, arch: str) -> None:
    """Load the CLIP text tower of ``source`` (file or ``'openai'``, as the visual weights) into ``branch``."""
    load_clip_text_state_dict(branch, read_clip_text_state_dict(source, arch), source)
