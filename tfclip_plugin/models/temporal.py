"""Temporal modules (``tfclip.temporal``): TMD and the alternatives of supplement Table 5.

- 'tmd' (``TemporalMemoryDiffusion``, AsuradaYuci/TF-CLIP ``model/make_model_clipreid.py:55-119``): one block
  after the backbone on the (detached) tokens of every frame. TMC: the mean token of each frame -> Linear -> self-attention across the
  T frames of the clip (residual) = one memory token per frame. MD: the memory token is appended *last* to its
  frame's tokens and one CLIP residual block (attention + QuickGELU MLP) runs over the L+1 tokens of each frame.
  Frame feature = mean over all L+1 output tokens; sequence feature = mean over frames.
- 'tmc' (``TemporalMemoryConstruction``): TMD without MD (supplement Table 3, rows A2 and A5). TMC as above,
  the memory token appended last to its frame's tokens, then the frame feature is the mean over the L+1
  tokens as they are: (L * mean token + memory token) / (L + 1). This is the reference's TMD block with its MD
  lines (``model/make_model_clipreid.py:99-101``) left out; the heads are TMD's (a frame head and a sequence
  head).
- 'tap': temporal average pooling only; no module and no temporal head (the f768/f512 heads are already
  frame averages), as rows A1/B2 of the ablations.
- 'conv1d', 'transf', 'transf_cls': ActionCLIP's temporal heads, which the reference keeps in
  ``model/Visual_Prompt.py`` for Table 5, on the per-frame projected embeddings (B, T, E):
  - 'conv1d': a depthwise temporal convolution (kernel 3) initialised as a channel shift (a quarter of the
    channels from the previous frame, half from the same frame, a quarter from the next), plus the input,
    then the frame mean. The reference reshapes (B, T, E) to (B, E, T) with ``view`` instead of a transpose,
    which scrambles channels and frames; we transpose.
  - 'transf': learnable frame positions (77 rows, as the reference), 6 CLIP residual blocks across the frames,
    plus the input, then the frame mean.
  - 'transf_cls': a learnable class token and positions, 6 post-LN ``nn.TransformerEncoderLayer`` blocks
    (ReLU, dropout 0.1) with a final LayerNorm; the class token's output. The reference sizes the position
    table for exactly ``seq_len`` frames and also builds an unused 77-row frame-position table; we keep one
    78-row table (clips of up to 77 frames).
  These act on the frames' projected CLS embeddings and are trained through the backbone (not detached), as
  the reference's ``temppool(img_feature_proj)`` call.
"""
from __future__ import annotations

from typing import Tuple

import torch
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock, Transformer
from torch import Tensor, nn

from .attention import SelfAttention, use_sdpa_attention

HEAD_WIDTH = 64
MAX_FRAMES = 77
TEMPORAL_NAMES = ("tmd", "tmc", "tap", "conv1d", "transf", "transf_cls")


def _heads(dim: int) -> int:
    return max(1, dim // HEAD_WIDTH)


class TemporalMemoryConstruction(nn.Module):
    """TMC alone; ``forward(tokens (B, T, L, D)) -> (frame (B*T, D), sequence (B, D))``.

    ``memory_tokens`` computes the per-frame memory token (B, T, D): Linear on the frame's mean token, then
    pre-LN self-attention across the T frames of the clip, residual. The frame feature is the mean over the
    frame's L tokens and its memory token.
    """

    frame_level = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim
        self.message_fc = nn.Linear(dim, dim)
        self.message_ln = LayerNorm(dim)
        self.message_attn = SelfAttention.from_multihead(nn.MultiheadAttention(dim, _heads(dim), batch_first=True))

    def memory_tokens(self, tokens: Tensor) -> Tensor:
        """tokens (B, T, L, D) -> (B, T, D)."""
        message = self.message_fc(tokens.mean(dim=2))
        h = self.message_ln(message)
        return message + self.message_attn(h, h, h, need_weights=False)[0]

    def with_memory_token(self, tokens: Tensor) -> Tensor:
        """tokens (B, T, L, D) -> (B*T, L+1, D), each frame's memory token last."""
        return torch.cat([tokens, self.memory_tokens(tokens)[:, :, None]], dim=2).flatten(0, 1)

    def forward(self, tokens: Tensor) -> Tuple[Tensor, Tensor]:
        b, t, _, d = tokens.shape
        frame = self.with_memory_token(tokens).mean(dim=1)
        return frame, frame.view(b, t, d).mean(dim=1)


class TemporalMemoryDiffusion(TemporalMemoryConstruction):
    """TMD = TMC + MD on frame tokens; ``forward(tokens (B, T, L, D)) -> (frame (B*T, D), sequence (B, D))``."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.diffusion = use_sdpa_attention(ResidualAttentionBlock(dim, _heads(dim), act_layer=QuickGELU))

    def forward(self, tokens: Tensor) -> Tuple[Tensor, Tensor]:
        b, t, _, d = tokens.shape
        frame = self.diffusion(self.with_memory_token(tokens)).mean(dim=1)
        return frame, frame.view(b, t, d).mean(dim=1)


class TemporalConv1d(nn.Module):
    """Shift-initialised depthwise temporal convolution; ``forward(frames (B, T, E)) -> (B, E)``."""

    frame_level = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim
        self.shift = nn.Conv1d(dim, dim, 3, padding=1, groups=dim, bias=False)
        weight = torch.zeros(dim, 1, 3)
        weight[: dim // 4, 0, 0] = 1.0
        weight[dim // 4: dim // 4 + dim // 2, 0, 1] = 1.0
        weight[dim // 4 + dim // 2:, 0, 2] = 1.0
        with torch.no_grad():
            self.shift.weight.copy_(weight)

    def forward(self, frames: Tensor) -> Tensor:
        shifted = self.shift(frames.transpose(1, 2)).transpose(1, 2)
        return (frames + shifted).mean(dim=1)


def _check_frames(frames: Tensor) -> None:
    if frames.shape[1] > MAX_FRAMES:
        raise ValueError(f"the temporal transformer has positions for at most {MAX_FRAMES} frames, "
                         f"got clips of {frames.shape[1]}")


class TemporalTransformer(nn.Module):
    """Frame positions + 6 residual blocks across frames + skip, then the mean; (B, T, E) -> (B, E)."""

    frame_level = False

    def __init__(self, dim: int, layers: int = 6) -> None:
        super().__init__()
        self.out_dim = dim
        self.frame_position_embeddings = nn.Embedding(MAX_FRAMES, dim)
        self.transformer = use_sdpa_attention(Transformer(dim, layers, _heads(dim), act_layer=QuickGELU))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, frames: Tensor) -> Tensor:
        _check_frames(frames)
        positions = self.frame_position_embeddings.weight[: frames.shape[1]].to(frames.dtype)
        return (self.transformer(frames + positions) + frames).mean(dim=1)


class TemporalClsTransformer(nn.Module):
    """Class token + positions + 6 post-LN encoder layers; the class token's output; (B, T, E) -> (B, E)."""

    frame_level = False

    def __init__(self, dim: int, layers: int = 6) -> None:
        super().__init__()
        self.out_dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, MAX_FRAMES + 1, dim))
        layer = nn.TransformerEncoderLayer(dim, _heads(dim), dim_feedforward=4 * dim, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.cls_token, std=0.02, a=-0.04, b=0.04)

    def forward(self, frames: Tensor) -> Tensor:
        _check_frames(frames)
        x = torch.cat([self.cls_token.to(frames.dtype).expand(frames.shape[0], -1, -1), frames], dim=1)
        return self.encoder(x + self.pos_embed[:, : x.shape[1]].to(frames.dtype))[:, 0]


def build_temporal(name: str, token_dim: int, embed_dim: int) -> nn.Module | None:
    """'tmd' and 'tmc' at the backbone's token width; the Table 5 alternatives at the embedding width;
    'tap' -> None."""
    if name == "tmd":
        return TemporalMemoryDiffusion(token_dim)
    if name == "tmc":
        return TemporalMemoryConstruction(token_dim)
    if name == "tap":
        return None
    if name == "conv1d":
        return TemporalConv1d(embed_dim)
    if name == "transf":
        return TemporalTransformer(embed_dim)
    if name == "transf_cls":
        return TemporalClsTransformer(embed_dim)
    raise ValueError(f"unknown tfclip.temporal '{name}'; expected one of {', '.join(TEMPORAL_NAMES)}")
