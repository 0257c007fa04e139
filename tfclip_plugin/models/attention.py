"""Self-attention through ``F.scaled_dot_product_attention`` for open_clip's residual blocks.

open_clip's ``ResidualAttentionBlock`` holds an ``nn.MultiheadAttention`` (batch-first). That module takes
one of two CPU/GPU paths, neither of which is the one we want:

- inference without autocast: the fused ``_native_multi_head_attention`` kernel, whose CPU attention is an
  explicit ``bmm`` / softmax / ``bmm`` (no flash kernel);
- training, or any call under autocast: ``F.multi_head_attention_forward``, which transposes the batch-first
  input to sequence-first and multiplies the *non-contiguous* tensor by the QKV weight. On the CPU that
  product is about 3x slower than on a contiguous input in fp32 and about 40x slower in bfloat16 (the
  weight is expanded into a batched product), so mixed precision made the ViT slower than fp32.

:class:`SelfAttention` is open_clip's own ``Attention`` (contiguous QKV projection, SDPA: flash or
memory-efficient kernels where the device has them) called with ``nn.MultiheadAttention``'s signature. Its
parameters keep ``nn.MultiheadAttention``'s names (``in_proj_weight``, ``in_proj_bias``, ``out_proj.*``), so
state dicts and CLIP weight files load unchanged. :func:`use_sdpa_attention` swaps it into a module tree;
:func:`attention_backend` picks the SDPA kernel (the SSP's attention uses it too).
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Optional, Tuple

import torch
from open_clip.transformer import Attention, ResidualAttentionBlock
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel


def attention_backend(x: Tensor) -> ContextManager:
    """The SDPA backend for a call on ``x``: on the CPU with autograd recording, the math kernel (the CPU
    flash kernel's backward takes about twice as long in bfloat16 and no less in fp32); elsewhere PyTorch's
    own choice (flash / memory-efficient kernels on GPUs, the flash kernel for CPU inference)."""
    if x.device.type == "cpu" and torch.is_grad_enabled():
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class SelfAttention(Attention):
    """Batch-first multi-head self-attention (SDPA) with ``nn.MultiheadAttention``'s call signature."""

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
        with attention_backend(query):
            return super().forward(query, attn_mask=attn_mask), None


def use_sdpa_attention(module: nn.Module) -> nn.Module:
    """Replace, in place, the ``nn.MultiheadAttention`` of every open_clip ``ResidualAttentionBlock`` under
    ``module`` by :class:`SelfAttention` on the same parameters; returns ``module``."""
    for block in module.modules():
        if isinstance(block, ResidualAttentionBlock) and isinstance(block.attn, nn.MultiheadAttention):
            block.attn = SelfAttention.from_multihead(block.attn)
    return module
