"""CLIP-ReID's text branch (learned per-identity prompts) on open_clip's CLIP text tower.

The tower is ``open_clip.model._build_text_tower`` (QuickGELU as in OpenAI's weights, causal mask, blocks on
``attention.SelfAttention`` with ``nn.MultiheadAttention``'s parameter names). Two modules hold it under
CLIP-ReID's state-dict names (CLIP-ReID model/make_model_clipreid.py:31-50,191-238):

- ``prompt_learner`` (:class:`PromptLearner`): the prompt "A photo of a X X X X person." tokenized with
  open_clip's tokenizer; the four X are replaced by learnable per-identity tokens ``cls_ctx`` (C, 4, width);
  the frozen embeddings of the tokens before (``token_prefix``, SOT "a photo of a") and after them
  (``token_suffix``, "person", ".", EOT and padding) are buffers computed once from the token embedding,
  which is not kept;
- ``text_encoder`` (:class:`TextEncoder`): prompts + ``positional_embedding`` -> ``transformer`` (causal) ->
  ``ln_final`` at the EOT token -> ``@ text_projection``. No normalisation, no logit scale.

:class:`TextBranch` holds both; ``text_features(labels)`` gives (B, embed_dim). Its state dict has CLIP-ReID's
keys ``prompt_learner.{cls_ctx,token_prefix,token_suffix}`` and ``text_encoder.{positional_embedding,
transformer.resblocks.*,ln_final.*,text_projection}``. Weights come from ``clip_weights.load_clip_text_weights``.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, _build_text_tower
from open_clip.tokenizer import tokenize
from torch import Tensor, nn

from .attention import use_sdpa_attention

PERSON_TEMPLATE = "A photo of a X X X X person."  # CLIP-ReID model/make_model_clipreid.py:197
VEHICLE_TEMPLATE = "A photo of a X X X X vehicle."  # CLIP-ReID model/make_model_clipreid.py:195
PLACEHOLDER = "X"
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
HEAD_WIDTH = 64  # OpenAI CLIP: heads = width // 64
CTX_INIT_STD = 0.02  # CLIP-ReID model/make_model_clipreid.py:211

TEXT_TOWERS = {  # arch: the text tower of OpenAI's CLIP ViT-B/16 and RN50
    "vit": {"width": 512, "layers": 12, "embed_dim": 512},
    "rn50": {"width": 512, "layers": 12, "embed_dim": 1024},
}


def prompt_tokens(template: str = PERSON_TEMPLATE, context_length: int = CONTEXT_LENGTH) -> Tuple[Tensor, slice]:
    """``template`` tokenized by open_clip's tokenizer -> (token ids (context_length,), the positions of its
    run of ``X`` placeholders). The EOT token is the largest id (``tokens.argmax()``)."""
    tokens = tokenize([template], context_length)[0]
    placeholder = int(tokenize([PLACEHOLDER])[0, 1])
    positions = (tokens == placeholder).nonzero().flatten().tolist()
    if not positions or positions != list(range(positions[0], positions[0] + len(positions))):
        raise ValueError(f"prompt template '{template}' needs one run of '{PLACEHOLDER}' placeholders for the "
                         f"learned identity tokens (e.g. '{PERSON_TEMPLATE}')")
    return tokens, slice(positions[0], positions[-1] + 1)


class PromptLearner(nn.Module):
    """Per-identity prompts: frozen template embeddings around learnable identity tokens.

    Parameters: ``cls_ctx`` (num_classes, n, width), N(0, 0.02), n = the number of placeholders (4).
    Buffers: ``token_prefix`` (1, start, width) and ``token_suffix`` (1, context_length - start - n, width), the
    template's token embeddings before and after the placeholders ((1, 5, w) and (1, 68, w) for the default
    template); ``tokens`` (1, context_length) the template's ids (not saved). ``eot_index``: position of EOT.
    """

    def __init__(self, num_classes: int, token_embedding: Tensor, template: str = PERSON_TEMPLATE,
                 context_length: int = CONTEXT_LENGTH) -> None:
        super().__init__()
        tokens, slots = prompt_tokens(template, context_length)
        width = token_embedding.shape[1]
        self.template = template
        self.eot_index = int(tokens.argmax())
        self.slots = slots
        self.register_buffer("tokens", tokens[None], persistent=False)
        self.register_buffer("token_prefix", torch.zeros(1, slots.start, width))
        self.register_buffer("token_suffix", torch.zeros(1, context_length - slots.stop, width))
        self.cls_ctx = nn.Parameter(torch.empty(num_classes, slots.stop - slots.start, width))
        nn.init.normal_(self.cls_ctx, std=CTX_INIT_STD)
        self.set_token_embedding(token_embedding)

    @torch.no_grad()
    def set_token_embedding(self, weight: Tensor) -> None:
        """Recompute ``token_prefix`` / ``token_suffix`` from a token embedding table (vocab, width)."""
        if weight.dim() != 2 or weight.shape[1] != self.token_prefix.shape[-1] or weight.shape[0] <= self.tokens.max():
            raise ValueError(f"token embedding of shape {tuple(weight.shape)} does not fit the prompt: expected "
                             f"(vocab > {int(self.tokens.max())}, {self.token_prefix.shape[-1]})")
        embedding = F.embedding(self.tokens, weight.to(self.token_prefix))
        self.token_prefix.copy_(embedding[:, :self.slots.start])
        self.token_suffix.copy_(embedding[:, self.slots.stop:])

    def forward(self, labels: Tensor) -> Tensor:
        """labels (B,) -> prompt embeddings (B, context_length, width) with ``cls_ctx[labels]`` in the slots."""
        batch = labels.shape[0]
        return torch.cat([self.token_prefix.expand(batch, -1, -1), self.cls_ctx[labels],
                          self.token_suffix.expand(batch, -1, -1)], dim=1)


class TextEncoder(nn.Module):
    """The CLIP text transformer on prompt embeddings instead of token ids.

    Takes over ``positional_embedding`` (context_length, width), ``transformer``, ``ln_final`` and
    ``text_projection`` (width, embed_dim) of an open_clip ``TextTransformer``; its causal mask is the
    non-persistent buffer ``attn_mask``.
    """

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.positional_embedding = tower.positional_embedding
        self.transformer = use_sdpa_attention(tower.transformer)
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        self.register_buffer("attn_mask", tower.attn_mask, persistent=False)

    def forward(self, prompts: Tensor, eot_index: int) -> Tensor:
        """prompts (B, L, width), EOT position -> (B, embed_dim): the projected, final-normed EOT token.

        The mask is causal, so the tokens after the EOT never reach it: only the first ``eot_index + 1``
        tokens are run (the same numbers as CLIP-ReID's full 77, make_model_clipreid.py:40-49).
        """
        length = eot_index + 1
        x = prompts[:, :length] + self.positional_embedding[:length].to(prompts.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        return self.ln_final(x[:, eot_index]) @ self.text_projection


class TextBranch(nn.Module):
    """CLIP-ReID's text branch: ``text_features(labels)`` = TextEncoder(PromptLearner(labels))."""

    def __init__(self, num_classes: int, embed_dim: int = TEXT_TOWERS["vit"]["embed_dim"],
                 width: int = TEXT_TOWERS["vit"]["width"], layers: int = TEXT_TOWERS["vit"]["layers"],
                 template: str = PERSON_TEMPLATE) -> None:
        super().__init__()
        if width <= 0 or width % HEAD_WIDTH:
            raise ValueError(f"text_width must be a positive multiple of {HEAD_WIDTH} (CLIP heads are "
                             f"{HEAD_WIDTH} wide), got {width}")
        cfg = CLIPTextCfg(context_length=CONTEXT_LENGTH, vocab_size=VOCAB_SIZE, width=width,
                          heads=width // HEAD_WIDTH, layers=layers)
        tower = _build_text_tower(embed_dim, cfg, quick_gelu=True)
        self.prompt_learner = PromptLearner(num_classes, tower.token_embedding.weight, template, CONTEXT_LENGTH)
        self.text_encoder = TextEncoder(tower)
        self.embed_dim = embed_dim

    def text_features(self, labels: Tensor) -> Tensor:
        """labels (B,) identity indices -> text features (B, embed_dim)."""
        return self.text_encoder(self.prompt_learner(labels), self.prompt_learner.eot_index)

    def forward(self, labels: Tensor) -> Tensor:
        """Same as :meth:`text_features`."""
        return self.text_features(labels)


def build_text_branch(arch: str, num_classes: int, text_width: int = 0, text_layers: int = 0, embed_dim: int = 0,
                      template: str = PERSON_TEMPLATE) -> TextBranch:
    """The text branch of ``arch`` ('vit' or 'rn50'); 0 keeps the architecture's own width/layers/embed_dim."""
    if arch not in TEXT_TOWERS:
        raise ValueError(f"unknown backbone architecture '{arch}'; expected one of {sorted(TEXT_TOWERS)}")
    own = TEXT_TOWERS[arch]
    return TextBranch(num_classes, embed_dim or own["embed_dim"], text_width or own["width"],
                      text_layers or own["layers"], template)
