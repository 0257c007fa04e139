"""Self-attention through ``F.scaled_dot_product_attention`` for open_clip's residual blocks.

open_clip's ``ResidualAttentionBlock`` holds an ``nn.MultiheadAttention`` (batch-first). That module takes
one of two CPU/GPU paths, neither of which is the one we want:

- inference without autocast: the fused ``_native_multi_head_attention`` kernel, whose CPU attention is an
  explicit ``bmm`` / softmax / ``bmm`` (no flash kernel);
- training, or any call under autocast: ``F.multi_head_attention_forward``, which transposes the batch-first
  input to sequence-first and multiplies the *non-contiguous* tensor by the QKV weight. On the CPU that
  product is about 3x slower than on a contiguous input in fp32 and about 40x slower in bfloat16 (the
  weight is expanded into a batched product), so mixed precision made the ViT slower than fp32.

:class:`SelfAttention` holds open_clip's ``Attention`` parameters and computes a contiguous QKV projection,
then :func:`attend` (SDPA's flash / memory-efficient kernels on GPUs, explicit products on the CPU), with
``nn.MultiheadAttention``'s call signature. Its parameters keep ``nn.MultiheadAttention``'s names
(``in_proj_weight``, ``in_proj_bias``, ``out_proj.*``), so state dicts and CLIP weight files load unchanged.
:func:`use_sdpa_attention` swaps it into a module tree; the SSP's cross-attention calls :func:`attend` too.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from open_clip.transformer import Attention, ResidualAttentionBlock
from torch import Tensor, nn


def attend(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None, dropout_p: float = 0.0) -> Tensor:
    """Scaled dot-product attention: q (..., Lq, E), k (..., Lk, E), v (..., Lk, Ev) -> (..., Lq, Ev).

    ``attn_mask`` (Lq, Lk) or broadcastable: float (added to the logits) or bool (True = not attended, as
    ``nn.MultiheadAttention``). On GPUs: ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels).
    On the CPU: explicit products with the softmax in fp32, which at ViT-B/16's sequence lengths (129-211
    tokens) runs bfloat16 attention about 2x faster than the CPU flash kernel (forward) and than the math
    kernel (training, which upcasts to fp32): 6 % of a bf16 ViT-B/16 forward, 7-13 % of a training step.
    """
    if q.device.type != "cpu":
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = ~attn_mask  # SDPA's bool masks mark the attended positions
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        logits = logits.masked_fill(attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
            else logits + attn_mask
    weights = logits.softmax(dim=-1, dtype=torch.float32).to(v.dtype)
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


class SelfAttention(Attention):
    """Batch-first multi-head self-attention (:func:`attend`) with ``nn.MultiheadAttention``'s call signature."""

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> "SelfAttention":
        """Take over the parameters (same tensors, same names) of a batch-first ``nn.MultiheadAttention``."""
        if not mha.batch_first or not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("SelfAttention replaces batch-first nn.MultiheadAttention with packed q/k/v "
                             "projections and no bias_k/bias_v/add_zero_attn only")
        attention = cls(mha.embed_dim, mha.num_heads, qkv_bias=mha.in_proj_bias is not None, attn_drop=mha.dropout)
        attention.in_proj_weight = mha.in_proj_weight
        attention.in_proj_bias = mha.in_proj_bias
        attention.out_proj = mha.out_proj
        return attention

    def forward(self, query: Tensor, key: Optional[Tensor] = None, value: Optional[Tensor] = None,
                need_weights: bool = False, attn_mask: Optional[Tensor] = None) -> Tuple[Tensor, None]:
        """query (N, L, D) (key and value, if given, must be the same tensor) -> ((N, L, D), None)."""
        if need_weights:
            raise ValueError("SelfAttention does not return attention weights (need_weights must be False)")
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("SelfAttention is self-attention only: key and value must be the query tensor")
        n, length, width = query.shape
        q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).view(
            n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = attend(q, k, v, attn_mask, self.attn_drop.p if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width)), None


def use_sdpa_attention(module: nn.Module) -> nn.Module:
    """Replace, in place, the ``nn.MultiheadAttention`` of every open_clip ``ResidualAttentionBlock`` under
    ``module`` by :class:`SelfAttention` on the same parameters; returns ``module``."""
    for block in module.modules():
        if isinstance(block, ResidualAttentionBlock) and isinstance(block.attn, nn.MultiheadAttention):
            block.attn = SelfAttention.from_multihead(block.attn)
    return module
