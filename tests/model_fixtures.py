"""Tiny TF-CLIP towers built through ``build_tfclip`` (the same path as ViT-B/16 and RN50) and random clips."""
import torch
from torch import nn

from tfclip_plugin.models import build_tfclip

TINY_VIT = dict(vision_width=64, vision_layers=2, embed_dim=64)
TINY_RN = dict(vision_width=16, vision_layers=1, embed_dim=64)
C = 5  # identities
CAMS = torch.tensor([0, 2])


def vit(**options) -> nn.Module:
    """A seeded tiny ``tfclip_vit`` for 64x32 frames, 5 identities, 3 cameras."""
    torch.manual_seed(0)
    return build_tfclip("tfclip_vit", C, 3, height=64, width=32, **{**TINY_VIT, **options})


def rn50(**options) -> nn.Module:
    """A seeded tiny ``tfclip_rn50`` for 64x32 frames, 5 identities, 1 camera."""
    torch.manual_seed(0)
    return build_tfclip("tfclip_rn50", C, 1, height=64, width=32, **{**TINY_RN, **options})


def clips(b: int = 2, t: int = 3, seed: int = 0) -> torch.Tensor:
    """(b, t, 3, 64, 32) seeded normal clips."""
    return torch.randn(b, t, 3, 64, 32, generator=torch.Generator().manual_seed(seed))


def no_dropout_train(model: nn.Module) -> nn.Module:
    """``model`` in training mode with its dropout layers in eval mode (deterministic training forwards)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    return model
