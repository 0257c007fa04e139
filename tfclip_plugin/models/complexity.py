"""Parameter counts and multiply-accumulates (``tfclip-reid complexity``).

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2) over every matrix product:
linear layers, convolutions, the ViT's ``x @ proj`` and the attention products QK^T and AV (PyTorch's CPU
attention kernel is registered here, since PyTorch does not count it; the fused ``nn.MultiheadAttention``
inference path is switched off while counting so that its products are seen). Normalisation, activations,
softmax and additions are not counted.

``gmacs_per_frame`` is the convention of the paper's Tables 4-6 ("FLOPs(G)" = 11.26 for the ViT-B/16 at
256x128): the ViT's 12 transformer blocks over 129 tokens (QKV, QK^T, AV, output projection, MLP) for one
frame. ``gmacs_per_frame_full`` adds the patch embedding and the projection of every token (our forward
projects all 129 tokens for the SSP); for the CNN both are the whole tower (stem, four stages and the attention
pool run over all tokens). ``temporal_gmacs_per_frame`` is the temporal module per frame of an 8-frame clip;
``ssp_gmacs_per_clip`` the SSP for one clip against the whole memory (training only).

Text mode: ``text`` counts the text branch (text encoder + the identity tokens ``cls_ctx``; CLIP's token embedding
is not kept), and ``text_gmacs_per_prompt`` is the text encoder on one prompt of CLIP's full 77 tokens, as
CLIP-ReID runs it (ours stops at the EOT token, 12 tokens, with the same result; training only).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .backbone import ViTBackbone

CLIP_FRAMES = 8


def count_parameters(module: Optional[nn.Module]) -> int:
    """All parameters of ``module`` (trainable or frozen); 0 for None."""
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops})


def _gmacs(flops: int) -> float:
    return round(flops / 2 / 1e9, 2)


def _module_flops(counter: FlopCounterMode, suffix: str) -> int:
    """FLOPs recorded under the module whose tracked name ends with ``suffix``."""
    counts = counter.get_flop_counts()
    names = [name for name in counts if name.endswith(suffix)]
    return sum(counts[names[0]].values()) if names else 0


def model_complexity(model: nn.Module, height: int = 256, width: int = 128) -> Dict[str, Any]:
    """{'backbone', 'ssp', 'temporal', 'text', 'heads', 'total'} parameter counts (heads = BNNecks, classifiers and
    the SIE table) and GMACs: 'gmacs_per_frame', 'gmacs_per_frame_full', 'temporal_gmacs_per_frame',
    'ssp_gmacs_per_clip', 'text_gmacs_per_prompt' (see the module docstring). The model is built for one input
    size; ``height`` and ``width`` must be that size."""
    backbone = model.backbone
    if tuple(backbone.image_size) != (height, width):
        raise ValueError(f"the model was built for {backbone.image_size[0]}x{backbone.image_size[1]} input, "
                         f"not {height}x{width} (set data.height/data.width before building it)")
    report: Dict[str, Any] = {
        "backbone": count_parameters(backbone),
        "ssp": count_parameters(model.ssp),
        "temporal": count_parameters(model.temporal),
        "text": count_parameters(getattr(model, "text", None)),
    }
    report["total"] = count_parameters(model)
    report["heads"] = report["total"] - report["backbone"] - report["ssp"] - report["temporal"] - report["text"]

    parameter = next(model.parameters())
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            frame = torch.zeros(1, 3, height, width, device=parameter.device, dtype=parameter.dtype)
            with _counter() as counter:
                tokens = backbone(frame).tokens
                backbone.project(tokens)
            full = counter.get_total_flops()
            trunk = _module_flops(counter, ".transformer") if isinstance(backbone, ViTBackbone) else full
            report["gmacs_per_frame"] = _gmacs(trunk)
            report["gmacs_per_frame_full"] = _gmacs(full)
            report["temporal_gmacs_per_frame"] = _gmacs(_temporal_flops(model, tokens) // CLIP_FRAMES)
            report["ssp_gmacs_per_clip"] = _gmacs(_ssp_flops(model, backbone.project(tokens)))
            report["text_gmacs_per_prompt"] = _gmacs(_text_flops(getattr(model, "text", None)))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
    return report


def _temporal_flops(model: nn.Module, tokens: torch.Tensor) -> int:
    if model.temporal is None:
        return 0
    if model.temporal.frame_level:
        clip = tokens.unsqueeze(1).expand(-1, CLIP_FRAMES, -1, -1)  # (1, T, L, D)
    else:
        clip = model.backbone.project(tokens[:, :1]).expand(-1, CLIP_FRAMES, -1)  # (1, T, E)
    with _counter() as counter:
        model.temporal(clip)
    return counter.get_total_flops()


def _ssp_flops(model: nn.Module, video: torch.Tensor) -> int:
    if model.ssp is None:
        return 0
    with _counter() as counter:
        model.ssp(model.memory, video)
    return counter.get_total_flops()


def _text_flops(text: Optional[nn.Module]) -> int:
    """The text encoder on one prompt of all ``context_length`` tokens (CLIP-ReID's full causal sequence)."""
    if text is None:
        return 0
    encoder = text.text_encoder
    prompt = text.prompt_learner(torch.zeros(1, dtype=torch.long, device=encoder.positional_embedding.device))
    with _counter() as counter:
        x = encoder.transformer(prompt + encoder.positional_embedding, attn_mask=encoder.attn_mask)
        encoder.ln_final(x[:, text.prompt_learner.eot_index]) @ encoder.text_projection
    return counter.get_total_flops()
