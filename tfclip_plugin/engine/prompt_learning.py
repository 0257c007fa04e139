"""Stage 1 of text mode: CLIP-ReID's prompt learning (Syliz517/CLIP-ReID processor/processor_clipreid_stage1.py).

Both encoders stay frozen. The training set's visual features are computed once beforehand (the engine uses
``memory.training_features``: one projected CLS per tracklet or image, without SIE, as CLIP-ReID's
``get_image=True``); then, for ``epochs`` epochs, a random permutation of them is cut into batches of
``batch_size`` (the last one partial, never empty) and each batch trains only the identity tokens
``cls_ctx`` with SupCon image-to-text + text-to-image (:func:`~tfclip_plugin.engine.losses.image_text_contrastive_loss`)
between the features and the text features of their identities. Adam with coupled weight decay, the learning
rate of epoch t from :func:`stage1_lr`, set at the start of the epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List

import torch
from torch import nn
from tqdm import tqdm

from ..distributed import is_main_process
from ..stopping import raise_if_stop_requested
from .features import autocast
from .losses import image_text_contrastive_loss
from .optim import backward_and_step


@dataclass(frozen=True)
class PromptLearningSchedule:
    """Stage-1 hyper-parameters (``tfclip.stage1_*``; defaults: CLIP-ReID configs/person/vit_clipreid.yml:29-41
    and solver/scheduler_factory.py:7-23)."""

    epochs: int = 120
    batch_size: int = 64
    lr: float = 3.5e-4
    weight_decay: float = 1e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 5
    warmup_lr: float = 1e-5

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.warmup_epochs < 0:
            raise ValueError(f"tfclip.stage1_epochs and tfclip.stage1_batch_size must be positive and "
                             f"tfclip.stage1_warmup_epochs at least 0; got {self.epochs}, {self.batch_size}, "
                             f"{self.warmup_epochs}")


def stage1_lr(epoch: int, schedule: PromptLearningSchedule) -> float:
    """Learning rate of stage-1 epoch ``epoch`` (1-based): CLIP-ReID's timm ``CosineLRScheduler(t_initial=epochs,
    lr_min, warmup_lr_init, warmup_t, cycle_limit=1)`` stepped with the epoch number at the start of each epoch
    (solver/cosine_lr.py:61-94, processor/processor_clipreid_stage1.py:62).

    t < warmup: ``warmup_lr + t (lr - warmup_lr) / warmup`` (1-based, so the top of the ramp is never reached);
    warmup <= t < epochs: ``min_lr + (lr - min_lr) (1 + cos(pi t / epochs)) / 2`` (the warm-up is not a prefix);
    t >= epochs: ``min_lr``.
    """
    s = schedule
    if epoch < s.warmup_epochs:
        return s.warmup_lr + epoch * (s.lr - s.warmup_lr) / s.warmup_epochs
    if epoch >= s.epochs:
        return s.min_lr
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * epoch / s.epochs))


def learn_prompts(model: nn.Module, features: torch.Tensor, labels: torch.Tensor, schedule: PromptLearningSchedule,
                  precision: str = "fp32", seed: int = 0) -> List[float]:
    """Train ``model.text.prompt_learner.cls_ctx`` on fixed image ``features`` (N, E) of identities ``labels``
    (N,); returns the mean loss of each epoch.

    Only ``cls_ctx`` takes gradients (it is made trainable for the loop and frozen again afterwards); the text
    encoder and everything else keep their values bit for bit. Batches come from a generator seeded with
    ``seed``, so every process of a group that runs this with the same inputs draws the same batches.
    ``precision``: autocast of the text forward ('fp16' adds a GradScaler, as CLIP-ReID's AMP).
    A stop request (``stopping``) ends it before the next epoch.
    """
    if features.shape[0] != labels.shape[0] or features.shape[0] == 0:
        raise ValueError(f"stage 1 needs one label per feature and at least one feature; got {features.shape[0]} "
                         f"features and {labels.shape[0]} labels")
    prompts = model.text.prompt_learner.cls_ctx
    device = prompts.device
    features, labels = features.to(device), labels.to(device)
    optimizer = torch.optim.Adam([prompts], lr=stage1_lr(1, schedule), weight_decay=schedule.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    generator = torch.Generator().manual_seed(seed)
    history = []
    prompts.requires_grad_(True)
    try:
        epochs = tqdm(range(1, schedule.epochs + 1), desc="Stage 1 (prompt learning)", unit="epoch",
                      dynamic_ncols=True, disable=not is_main_process())
        for epoch in epochs:
            raise_if_stop_requested("stage 1")
            for group in optimizer.param_groups:
                group["lr"] = stage1_lr(epoch, schedule)
            losses = []
            for batch in torch.randperm(features.shape[0], generator=generator).split(schedule.batch_size):
                batch = batch.to(device)
                with autocast(device, precision):
                    text = model.text_features(labels[batch])
                loss = image_text_contrastive_loss(features[batch], text, labels[batch])
                optimizer.zero_grad(set_to_none=True)
                backward_and_step(loss, optimizer, scaler)
                losses.append(loss.item())
            history.append(sum(losses) / len(losses))
            epochs.set_postfix(loss=f"{history[-1]:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    finally:
        prompts.requires_grad_(False)
        prompts.grad = None
    return history


@torch.no_grad()
def text_image_accuracy(features: torch.Tensor, labels: torch.Tensor, text_table: torch.Tensor) -> Dict[str, float]:
    """How well the identities' text features ``text_table`` (C, E) and image ``features`` (N, E) of ``labels``
    (N,) find each other by dot product: 'i2t' = share of features whose best identity is their own
    (CLIP-ReID's stage-2 Acc), 't2i' = share of the identities present whose best feature is one of theirs."""
    features, labels, text_table = features.float().cpu(), labels.cpu(), text_table.float().cpu()
    logits = features @ text_table.t()  # (N, C)
    present = labels.unique()
    best_feature = logits[:, present].argmax(dim=0)  # (P,)
    return {"i2t": (logits.argmax(dim=1) == labels).float().mean().item(),
            "t2i": (labels[best_feature] == present).float().mean().item()}
