"""SDPA self-attention in place of open_clip's nn.MultiheadAttention: same numbers, same state dict names."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, ResidualAttentionBlock
from torch import nn

from tfclip_plugin.models import build_tfclip
from tfclip_plugin.models.attention import SelfAttention, attend, use_sdpa_attention


def _pair(dim: int = 64, heads: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(dim, heads, batch_first=True)
    nn.init.normal_(mha.in_proj_bias, std=0.1)
    nn.init.normal_(mha.out_proj.bias, std=0.1)
    reference = nn.MultiheadAttention(dim, heads, batch_first=True)
    reference.load_state_dict(mha.state_dict())
    return reference, SelfAttention.from_multihead(mha)


def test_same_outputs_and_gradients_as_multihead_attention():
    reference, ours = _pair()
    x = torch.randn(3, 11, 64, generator=torch.Generator().manual_seed(1))
    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    expected = reference(x_ref, x_ref, x_ref, need_weights=False)[0]
    out, weights = ours(x_ours, x_ours, x_ours, need_weights=False)
    assert weights is None and out.shape == (3, 11, 64)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    (expected ** 2).sum().backward()
    (out ** 2).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.in_proj_weight.grad, reference.in_proj_weight.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.out_proj.bias.grad, reference.out_proj.bias.grad, atol=1e-5, rtol=1e-4)


def test_same_outputs_in_inference_mode_where_multihead_attention_takes_its_fused_path():
    reference, ours = _pair(seed=3)
    reference.eval(), ours.eval()
    x = torch.randn(2, 129, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], reference(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)


def test_takes_over_the_parameters_under_the_same_names():
    mha = nn.MultiheadAttention(64, 4, batch_first=True)
    ours = SelfAttention.from_multihead(mha)
    assert list(ours.state_dict()) == list(mha.state_dict())
    assert ours.in_proj_weight is mha.in_proj_weight and ours.out_proj is mha.out_proj and ours.num_heads == 4


def test_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="batch-first"):
        SelfAttention.from_multihead(nn.MultiheadAttention(64, 4))
    with pytest.raises(ValueError, match="batch-first"):
        SelfAttention.from_multihead(nn.MultiheadAttention(64, 4, batch_first=True, kdim=32, vdim=32))
    _, ours = _pair()
    x, other = torch.randn(1, 5, 64), torch.randn(1, 5, 64)
    with pytest.raises(ValueError, match="need_weights"):
        ours(x, x, x, need_weights=True)
    with pytest.raises(ValueError, match="self-attention only"):
        ours(x, other, other)


def test_residual_blocks_and_the_model_carry_no_multihead_attention():
    block = use_sdpa_attention(ResidualAttentionBlock(64, 1, act_layer=QuickGELU))
    assert isinstance(block.attn, SelfAttention)
    model = build_tfclip("tfclip_vit", 5, 2, vision_width=64, vision_layers=2, embed_dim=64)
    kinds = {type(m) for m in model.modules()}
    assert nn.MultiheadAttention not in kinds and SelfAttention in kinds
    assert sum(isinstance(m, SelfAttention) for m in model.modules()) == 2 + 2  # 2 blocks + TMD message + MD


def _qkv(dtype=torch.float32, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 129, 16, generator=g).to(dtype).requires_grad_(True) for _ in range(3)]


def test_cpu_attention_equals_sdpa_with_gradients_and_masks():
    q, k, v = _qkv()
    q2, k2, v2 = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out, expected = attend(q, k, v), F.scaled_dot_product_attention(q2, k2, v2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    (out ** 2).sum().backward()
    (expected ** 2).sum().backward()
    for ours, theirs in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        blocked = torch.zeros(129, 129, dtype=torch.bool)
        blocked[:, 100:] = True  # nn.MultiheadAttention's meaning: True = not attended
        torch.testing.assert_close(attend(q, k, v, blocked), attend(q[..., :, :], k[..., :100, :], v[..., :100, :]),
                                   atol=1e-5, rtol=1e-5)
        additive = torch.randn(129, 129, generator=torch.Generator().manual_seed(6))
        torch.testing.assert_close(attend(q, k, v, additive), F.scaled_dot_product_attention(q, k, v, additive),
                                   atol=1e-5, rtol=1e-5)


def test_cpu_attention_in_bfloat16_stays_close_to_fp32():
    q, k, v = _qkv()
    with torch.no_grad():
        out = attend(*(t.bfloat16() for t in (q, k, v)))
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), attend(q, k, v), atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_attention_equals_the_cpu_products_with_masks_and_gradients():
    torch.backends.cuda.matmul.allow_tf32 = False
    q, k, v = _qkv()
    blocked = torch.zeros(129, 129, dtype=torch.bool)
    blocked[:, 100:] = True
    for mask in (None, blocked, torch.randn(129, 129, generator=torch.Generator().manual_seed(7))):
        gpu = [t.detach().cuda().requires_grad_(True) for t in (q, k, v)]
        cpu = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        out_gpu = attend(*gpu, None if mask is None else mask.cuda())
        out_cpu = attend(*cpu, mask)
        torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-4, rtol=1e-4)
        out_gpu.square().sum().backward()
        out_cpu.square().sum().backward()
        for a, b in zip(gpu, cpu):
            torch.testing.assert_close(a.grad.cpu(), b.grad, atol=1e-4, rtol=1e-4)
    model = build_tfclip("tfclip_vit", 5, 2, vision_width=64, vision_layers=2, embed_dim=64).eval()
    clips = torch.randn(2, 4, 3, 256, 128, generator=torch.Generator().manual_seed(8))
    camids = torch.tensor([0, 1])
    with torch.no_grad():
        expected = model(clips, camids)
        got = model.cuda()(clips.cuda(), camids.cuda()).cpu()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
