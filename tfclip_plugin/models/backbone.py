"""CLIP visual towers (open_clip) with TF-CLIP's token forward.

Only the visual tower is built (``open_clip.model._build_vision_tower``, QuickGELU as in OpenAI's weights);
the text tower never exists. open_clip's own ``forward`` pools and projects the CLS token only, so both
backbones run the trunk from open_clip's public submodules and return every token
(AsuradaYuci/TF-CLIP ``model/make_model_clipreid.py:165-171``, ``model/clip/model.py:206-240``):

- ViT: patch embedding -> CLS (+ the SIE camera offset) -> + positional embedding -> ln_pre -> transformer
  -> ln_post on all tokens; ``project`` multiplies by ``proj``. The patch stride may differ from the patch size
  (12 = overlapping patches); the positional embedding follows the grid ``((H-16)//s+1, (W-16)//s+1)``.
  The blocks' attention runs through ``F.scaled_dot_product_attention`` (``attention.SelfAttention``).
- ModifiedResNet (CLIP RN50): stem and layers 1-4 with the last stride set to 1 (a 16x8 map for 256x128
  input); the attention pool runs its query over all ``1 + h*w`` tokens (open_clip keeps only the first), so
  its outputs serve as tokens already in the joint embedding space; ``project`` is the identity.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from open_clip.model import CLIPVisionCfg, _build_vision_tower
from torch import Tensor, nn

from .attention import use_sdpa_attention

PATCH_SIZE = 16
HEAD_WIDTH = 64  # OpenAI CLIP: heads = width // 64 (ViT), width * 32 // 64 (ModifiedResNet)

VIT_B16 = {"width": 768, "layers": 12, "embed_dim": 512}
RN50 = {"width": 64, "layers": (3, 4, 6, 3), "embed_dim": 1024}


class FrameTokens(NamedTuple):
    """Per-frame backbone outputs for N frames.

    cls: (N, Dc) global feature before projection (ViT: CLS after ln_post, Dc = width; ModifiedResNet:
        average-pooled layer4 map, Dc = 32 * width).
    tokens: (N, L, Dt) all tokens (ViT: after ln_post, Dt = width; ModifiedResNet: attention-pool outputs,
        Dt = embed_dim). ``tokens[:, 0]`` projected by ``Backbone.project`` is the frame's embedding.
    """

    cls: Tensor
    tokens: Tensor


def grid_shape(height: int, width: int, stride: int) -> Tuple[int, int]:
    """Patch grid of a 16x16 patch embedding with the given stride: ``((H-16)//s+1, (W-16)//s+1)``."""
    if height < PATCH_SIZE or width < PATCH_SIZE:
        raise ValueError(f"input {height}x{width} is smaller than one {PATCH_SIZE}x{PATCH_SIZE} patch")
    return (height - PATCH_SIZE) // stride + 1, (width - PATCH_SIZE) // stride + 1


def _check_width(width: int) -> None:
    if width <= 0 or width % HEAD_WIDTH:
        raise ValueError(f"tfclip.vision_width must be a positive multiple of {HEAD_WIDTH} (CLIP heads are "
                         f"{HEAD_WIDTH} wide), got {width}")


class ViTBackbone(nn.Module):
    """CLIP ViT visual tower; ``visual`` is open_clip's ``VisionTransformer`` (parameter names as OpenAI's)."""

    cls_in_test_feature = True

    def __init__(self, height: int = 256, width: int = 128, stride: int = PATCH_SIZE,
                 vision_width: int = VIT_B16["width"], vision_layers: int = VIT_B16["layers"],
                 embed_dim: int = VIT_B16["embed_dim"]) -> None:
        super().__init__()
        _check_width(vision_width)
        if not 0 < stride <= PATCH_SIZE:
            raise ValueError(f"tfclip.stride must be in 1..{PATCH_SIZE}, got {stride}")
        cfg = CLIPVisionCfg(layers=vision_layers, width=vision_width, head_width=HEAD_WIDTH,
                            patch_size=PATCH_SIZE, image_size=(height, width))
        self.visual = use_sdpa_attention(_build_vision_tower(embed_dim, cfg, quick_gelu=True))
        self.grid_size = grid_shape(height, width, stride)
        if stride != PATCH_SIZE:
            self.visual.conv1.stride = (stride, stride)
            self.visual.grid_size = self.grid_size
            rows = self.grid_size[0] * self.grid_size[1] + 1
            self.visual.positional_embedding = nn.Parameter(vision_width ** -0.5 * torch.randn(rows, vision_width))
        self.image_size = (height, width)
        self.cls_dim = self.token_dim = vision_width
        self.embed_dim = embed_dim
        self.num_tokens = self.grid_size[0] * self.grid_size[1] + 1

    def _embed(self, frames: Tensor, cls_offset: Tensor | None) -> Tensor:
        """frames (N, 3, H, W) -> the transformer's input (N, L, width): patches, CLS (+ offset), positions, ln_pre."""
        v = self.visual
        x = v.conv1(frames).flatten(2).transpose(1, 2)  # (N, h*w, width)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        if cls_offset is not None:
            cls = cls + cls_offset[:, None].to(x.dtype)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(x)

    def forward(self, frames: Tensor, cls_offset: Tensor | None = None) -> FrameTokens:
        """frames (N, 3, H, W), cls_offset (N, width) added to the CLS token (SIE) -> FrameTokens."""
        x = self.visual.transformer(self._embed(frames, cls_offset))  # batch-first; honours grad checkpointing
        x = self.visual.ln_post(x)
        return FrameTokens(cls=x[:, 0], tokens=x)

    def forward_with_penultimate(self, frames: Tensor, cls_offset: Tensor | None = None) -> Tuple[FrameTokens, Tensor]:
        """As ``forward``, plus the CLS token after all blocks but the last, before ln_post: (N, width).

        CLIP-ReID's ``img_feature_last``, its third triplet feature (CLIP-ReID model/clip/model.py:230-236,
        model/make_model_clipreid.py:136). Same cost as ``forward``.
        """
        x = self._embed(frames, cls_offset)
        blocks = len(self.visual.transformer.resblocks)
        if blocks == 1:
            penultimate, x = x[:, 0], self.visual.transformer(x)
        else:
            x, (inner,) = self.visual.transformer.forward_intermediates(x, indices=[blocks - 2])
            penultimate = inner[:, 0]
        x = self.visual.ln_post(x)
        return FrameTokens(cls=x[:, 0], tokens=x), penultimate

    def project(self, x: Tensor) -> Tensor:
        """(..., width) -> (..., embed_dim): CLIP's projection into the joint space."""
        return x @ self.visual.proj

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the transformer blocks (open_clip's implementation)."""
        self.visual.set_grad_checkpointing(enable)


class ResNetBackbone(nn.Module):
    """CLIP ModifiedResNet visual tower with last stride 1; ``visual`` is open_clip's ``ModifiedResNet``."""

    cls_in_test_feature = False

    def __init__(self, height: int = 256, width: int = 128, vision_width: int = RN50["width"],
                 vision_layers: Sequence[int] = RN50["layers"], embed_dim: int = RN50["embed_dim"]) -> None:
        super().__init__()
        if vision_width <= 0 or (vision_width * 32) % HEAD_WIDTH:
            raise ValueError(f"tfclip.vision_width must be a positive multiple of 2 for the CNN, got {vision_width}")
        if height % 16 or width % 16:
            raise ValueError(f"the CNN needs an input size divisible by 16 (last stride 1), got {height}x{width}")
        cfg = CLIPVisionCfg(layers=tuple(vision_layers), width=vision_width, head_width=HEAD_WIDTH, image_size=224)
        self.visual = _build_vision_tower(embed_dim, cfg, quick_gelu=True)
        first = self.visual.layer4[0]  # last stride 2 -> 1: both downsampling average pools become identities
        first.avgpool = nn.Identity()
        setattr(first.downsample, "-1", nn.Identity())
        first.stride = 1
        self.grid_size = (height // 16, width // 16)
        channels = vision_width * 32
        rows = self.grid_size[0] * self.grid_size[1] + 1
        self.visual.attnpool.positional_embedding = nn.Parameter(torch.randn(rows, channels) / channels ** 0.5)
        self.image_size = (height, width)
        self.cls_dim = channels
        self.token_dim = self.embed_dim = embed_dim
        self.num_tokens = rows

    def forward(self, frames: Tensor, cls_offset: Tensor | None = None) -> FrameTokens:
        """frames (N, 3, H, W) -> FrameTokens; the CNN has no CLS token, so ``cls_offset`` must be None."""
        return self._tokens(self._layers(frames, cls_offset)[1])

    def forward_with_penultimate(self, frames: Tensor, cls_offset: Tensor | None = None) -> Tuple[FrameTokens, Tensor]:
        """As ``forward``, plus the average-pooled layer3 map (N, 16 * width): CLIP-ReID's ``img_feature_last``
        for the CNN (CLIP-ReID model/make_model_clipreid.py:122)."""
        layer3, layer4 = self._layers(frames, cls_offset)
        return self._tokens(layer4), layer3.mean(dim=(2, 3))

    def _layers(self, frames: Tensor, cls_offset: Tensor | None) -> Tuple[Tensor, Tensor]:
        """frames (N, 3, H, W) -> layer3 (N, 16*width, H/16, W/16), layer4 (N, 32*width, H/16, W/16)."""
        if cls_offset is not None:
            raise ValueError("the CNN backbone has no CLS token for a camera embedding (build it with tfclip.sie False)")
        v = self.visual
        layer3 = v.layer3(v.layer2(v.layer1(v.stem(frames))))
        return layer3, v.layer4(layer3)

    def _tokens(self, x: Tensor) -> FrameTokens:
        """layer4 map (N, C, h, w) -> FrameTokens (average-pooled map, attention-pool tokens)."""
        return FrameTokens(cls=x.mean(dim=(2, 3)), tokens=self._attention_pool_tokens(x))

    def _attention_pool_tokens(self, x: Tensor) -> Tensor:
        """(N, C, h, w) -> (N, 1+h*w, embed_dim): CLIP's attention pool with every token as a query."""
        pool = self.visual.attnpool
        x = x.flatten(2).transpose(1, 2)  # (N, h*w, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + pool.positional_embedding.to(x.dtype)
        n, length, channels = x.shape
        heads = pool.num_heads

        def split(t: Tensor) -> Tensor:
            return t.view(n, length, heads, channels // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(pool.q_proj(x)), split(pool.k_proj(x)), split(pool.v_proj(x)))
        return pool.c_proj(out.transpose(1, 2).reshape(n, length, channels))

    def project(self, x: Tensor) -> Tensor:
        """The attention pool already projects into the joint space: identity."""
        return x

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """open_clip's ModifiedResNet has no activation checkpointing; enabling it only warns."""
        if enable:
            warnings.warn("tfclip.grad_checkpointing has no effect on the CNN backbone (open_clip's ModifiedResNet "
                          "does not implement it)", stacklevel=2)


Backbone = Union[ViTBackbone, ResNetBackbone]


def build_backbone(arch: str, height: int, width: int, stride: int = PATCH_SIZE, vision_width: int = 0,
                   vision_layers: int = 0, embed_dim: int = 0) -> Backbone:
    """Build the visual tower of ``arch`` ('vit' or 'rn50'); 0 keeps the architecture's own width/layers/dim.

    For the CNN, ``vision_layers`` n gives n blocks in each of the four stages (tiny towers).
    """
    if arch == "vit":
        return ViTBackbone(height, width, stride, vision_width or VIT_B16["width"],
                           vision_layers or VIT_B16["layers"], embed_dim or VIT_B16["embed_dim"])
    if arch == "rn50":
        if stride != PATCH_SIZE:
            raise ValueError(f"tfclip.stride applies to the ViT patch embedding only; the CNN needs {PATCH_SIZE}, "
                             f"got {stride}")
        layers = (vision_layers,) * 4 if vision_layers else RN50["layers"]
        return ResNetBackbone(height, width, vision_width or RN50["width"], layers, embed_dim or RN50["embed_dim"])
    raise ValueError(f"unknown backbone architecture '{arch}'; expected 'vit' or 'rn50'")
