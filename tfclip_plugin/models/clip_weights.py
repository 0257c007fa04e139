"""Pretrained CLIP weights for the visual towers (``tfclip.clip_weights``).

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
"""
from __future__ import annotations

import math
import os
import warnings
import zipfile
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .backbone import Backbone, ResNetBackbone

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


def read_clip_state_dict(source: str, arch: str) -> Dict[str, Tensor]:
    """The visual tower's weights (fp32, OpenAI/open_clip names without ``visual.``) from ``source``."""
    if source == "openai":
        import open_clip

        model = open_clip.create_model(OPENAI_MODEL_NAMES[arch], pretrained="openai")
        return _as_fp32(model.visual.state_dict())
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
    return _as_fp32(_visual_part(state_dict))


def load_clip_weights(backbone: Backbone, source: str) -> None:
    """Load CLIP weights from ``source`` into ``backbone.visual`` (grid embedding resized to its grid).

    Raises ValueError naming the source and the first mismatching keys when the weights belong to another
    architecture or size (e.g. RN50 weights for the ViT, or ViT-B/16 weights for a tiny tower).
    """
    arch = "rn50" if isinstance(backbone, ResNetBackbone) else "vit"
    state_dict = read_clip_state_dict(source, arch)
    target = backbone.visual.state_dict()
    grid_key = "attnpool.positional_embedding" if arch == "rn50" else "positional_embedding"
    if grid_key in state_dict and state_dict[grid_key].shape != target[grid_key].shape:
        if state_dict[grid_key].shape[-1] == target[grid_key].shape[-1]:
            state_dict[grid_key] = resize_grid_embedding(state_dict[grid_key], backbone.grid_size)
    missing = sorted(set(target) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(target))
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)}, model {tuple(target[k].shape)}"
                  for k in sorted(set(target) & set(state_dict)) if state_dict[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        expected = (f"CLIP {'ModifiedResNet' if arch == 'rn50' else 'ViT'} weights with conv1.weight "
                    f"{tuple(target['conv1.weight'].shape)} and {len(target)} tensors")
        details = "; ".join(filter(None, [
            f"mismatched shapes: {', '.join(mismatched[:3])}" if mismatched else "",
            f"missing: {', '.join(missing[:3])}" if missing else "",
            f"unexpected: {', '.join(unexpected[:3])}" if unexpected else "",
        ]))
        raise ValueError(f"tfclip.clip_weights '{source}' does not fit the backbone (expected {expected}): {details}")
    backbone.visual.load_state_dict(state_dict)
    backbone.float()
