"""Sequence-Specific Prompt (SSP): adapts the CLIP-Memory to each training clip (AsuradaYuci/TF-CLIP
``model/make_model_clipreid.py:323-428``).

Both variants take the memory M (C, E) and a clip's video tokens V (B, L, E) (all projected tokens averaged
over frames) and return the prompt P (B, C, E); the V2M logits use M + P.

- ``PaperSSP`` ('paper'): LayerNorm on V, then N layers of {cross-attention with the memory rows as queries
  and V as keys/values, then an MLP}, both residual. This is the module of the paper's figure and Algorithm 2,
  of the LS-VID/iLIDS checkpoints, and the one that reproduces the paper's parameter counts (3,150,848 per
  512-d layer). It returns the accumulated residual update ``X_N - M``. The code that produced those
  checkpoints returned ``X_N`` itself, so its caller's ``M + SSP(M, V)`` was ``2M + delta``: the memory
  entered the V2M logits twice over. We return the update, so the logits use ``M + delta`` as the paper states;
  ``tfclip.ssp_residual 'pre-release'`` makes the model add M once more (``2M + delta``), as that code did.
- ``ReleasedSSP`` ('released'): the GitHub module. V -> LN, Linear, LN; M -> LN, Linear; N layers of
  {self-attention among the memory rows, cross-attention to V, MLP}; then LN, Linear. Its ``norm`` and
  ``alpha`` are never used by the reference; they are kept (frozen) only so that released checkpoints load
  key for key and the parameter count matches (9,195,520 for 2 layers at 512-d).

Attention is the reference's: bias-free q/k/v projections, scale head_dim ** -0.5, output projection with
bias followed by dropout 0.1; computed by ``attention.attend``. Heads = E // 64.
Initialisation as the reference: Linear weights truncated normal (std 0.02), biases 0, LayerNorm 1/0.
"""
from __future__ import annotations

import torch
from open_clip.transformer import QuickGELU
from torch import Tensor, nn

from .attention import attend

HEAD_WIDTH = 64
SSP_NAMES = ("paper", "released", "none")
SSP_RESIDUALS = ("update", "pre-release")


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v projections (batch-first)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, N, D) -> (B, heads, N, D/heads)

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        """query (B, Nq, D), context (B, Nk, D) -> (B, Nq, D)."""
        out = attend(self._split(self.q_proj(query)), self._split(self.k_proj(context)),
                     self._split(self.v_proj(context)))
        return self.proj_drop(self.proj(out.transpose(1, 2).flatten(2)))


class PromptLayer(nn.Module):
    """[self-attention among memory rows +] cross-attention memory -> video + MLP, all pre-LN residual."""

    def __init__(self, dim: int, dropout: float = 0.1, self_attention: bool = False) -> None:
        super().__init__()
        heads = max(1, dim // HEAD_WIDTH)
        self.self_attn_norm = nn.LayerNorm(dim) if self_attention else None
        self.self_attn = Attention(dim, heads, dropout) if self_attention else None
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads, dropout)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), QuickGELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.mlp_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, video: Tensor) -> Tensor:
        """x (B, C, D) memory rows, video (B, L, D) -> (B, C, D)."""
        if self.self_attn is not None:
            h = self.self_attn_norm(x)
            x = x + self.self_attn(h, h)
        x = x + self.cross_attn(self.cross_attn_norm(x), video)
        return x + self.mlp_drop(self.mlp(self.mlp_norm(x)))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class PaperSSP(nn.Module):
    """The paper's SSP; ``forward(memory (C, E), video (B, L, E)) -> (B, C, E)`` residual update."""

    def __init__(self, dim: int, layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.video_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList([PromptLayer(dim, dropout) for _ in range(layers)])
        self.apply(_init_weights)

    def forward(self, memory: Tensor, video: Tensor) -> Tensor:
        video = self.video_norm(video)
        start = memory.to(video.dtype).expand(video.shape[0], -1, -1)
        x = start
        for layer in self.layers:
            x = layer(x, video)
        return x - start


class ReleasedSSP(nn.Module):
    """The GitHub SSP; ``forward(memory (C, E), video (B, L, E)) -> (B, C, E)`` prompt."""

    def __init__(self, dim: int, layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.video_in = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.memory_in = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.layers = nn.ModuleList([PromptLayer(dim, dropout, self_attention=True) for _ in range(layers)])
        self.prompt_out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.apply(_init_weights)
        self.norm = nn.LayerNorm(dim).requires_grad_(False)  # unused by the reference; kept for its checkpoints
        self.alpha = nn.Parameter(torch.full((dim,), 0.1), requires_grad=False)  # idem

    def forward(self, memory: Tensor, video: Tensor) -> Tensor:
        video = self.video_in(video)
        x = self.memory_in(memory.to(video.dtype)).expand(video.shape[0], -1, -1)
        for layer in self.layers:
            x = layer(x, video)
        return self.prompt_out(x)


def build_ssp(name: str, dim: int, layers: int = 2) -> nn.Module | None:
    """'paper' | 'released' -> the module at width ``dim``; 'none' -> None (V2M on the bare memory)."""
    if name == "paper":
        return PaperSSP(dim, layers)
    if name == "released":
        return ReleasedSSP(dim, layers)
    if name == "none":
        return None
    raise ValueError(f"unknown tfclip.ssp '{name}'; expected one of {', '.join(SSP_NAMES)}")
