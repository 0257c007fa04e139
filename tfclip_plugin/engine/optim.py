"""Optimizer and schedule of TF-CLIP's phase 2 (AsuradaYuci/TF-CLIP
``solver/make_optimizer_prompt.py:22-51``, ``solver/lr_scheduler.py:14-56``).

Learning rate and weight decay per parameter, applied in the reference's order:
base ``train.lr`` / ``train.weight_decay``; a name containing ``bias``: lr x ``tfclip.bias_lr_mult``, decay
``tfclip.bias_weight_decay``; a name containing ``classifier_proj_temp``: lr x ``tfclip.fc_lr_mult``; a name
under ``ssp.`` or ``temporal.``: lr x ``tfclip.prompt_lr_mult`` (the x10 that the checkpoint-producing code
gave its ``prompts_generator``/``SAT`` modules). Frozen parameters are left out. Parameters that share
(lr, decay) share one param group; each group lists its ``param_names``.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from yacs.config import CfgNode as CN

PROMPT_PREFIXES = ("ssp.", "temporal.")


def parameter_settings(model: nn.Module, cfg: CN) -> Dict[str, Tuple[float, float]]:
    """``{parameter name: (lr, weight_decay)}`` for every trainable parameter of ``model``."""
    t = cfg.tfclip
    settings = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr, decay = cfg.train.lr, cfg.train.weight_decay
        if "bias" in name:
            lr, decay = lr * t.bias_lr_mult, t.bias_weight_decay
        if "classifier_proj_temp" in name:
            lr *= t.fc_lr_mult
        if name.startswith(PROMPT_PREFIXES):
            lr *= t.prompt_lr_mult
        settings[name] = (lr, decay)
    return settings


def parameter_groups(model: nn.Module, cfg: CN) -> List[dict]:
    """Param groups by (lr, weight_decay); the base group comes last (torchreid logs the last group's lr)."""
    settings = parameter_settings(model, cfg)
    params = dict(model.named_parameters())
    groups: Dict[Tuple[float, float], dict] = {}
    for name, (lr, decay) in settings.items():
        group = groups.setdefault((lr, decay), {"params": [], "param_names": [], "lr": lr, "weight_decay": decay})
        group["params"].append(params[name])
        group["param_names"].append(name)
    base = (cfg.train.lr, cfg.train.weight_decay)
    return sorted(groups.values(), key=lambda g: (g["lr"], g["weight_decay"]) == base)


def build_optimizer(model: nn.Module, cfg: CN) -> torch.optim.Optimizer:
    """Adam (``train.optim adam``, betas ``adam.beta1/beta2``, coupled L2 decay as the reference) or SGD.

    On the CPU, Adam runs as one fused kernel over all parameters (the same update; on 2 cores 0.06 s instead
    of 0.25 s per step for TF-CLIP's 104M parameters). On GPUs it keeps PyTorch's default (multi-tensor): the
    fused kernel saved no measurable time there and, under fp16's GradScaler, raised the peak by 0.8 GiB.
    """
    groups = parameter_groups(model, cfg)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if cfg.train.optim == "adam":
        return torch.optim.Adam(groups, lr=cfg.train.lr, betas=(cfg.adam.beta1, cfg.adam.beta2),
                                fused=_all_on_cpu(groups))
    if cfg.train.optim == "sgd":
        return torch.optim.SGD(groups, lr=cfg.train.lr, momentum=cfg.sgd.momentum, dampening=cfg.sgd.dampening,
                               nesterov=cfg.sgd.nesterov)
    raise ValueError(f"train.optim must be 'adam' or 'sgd' for TF-CLIP models; got {cfg.train.optim!r}")


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      scaler: Optional[torch.amp.GradScaler] = None) -> None:
    """Backpropagate the scalar ``loss`` and step ``optimizer``, through ``scaler`` (fp16) when given."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _all_on_cpu(groups: List[dict]) -> Optional[bool]:
    """True when every parameter is a floating-point CPU tensor; None (PyTorch's choice) otherwise."""
    return all(p.is_floating_point() and p.device.type == "cpu" for g in groups for p in g["params"]) or None


class WarmupMultiStep:
    """lr multiplier of epoch index e (0-based, = the scheduler's ``last_epoch``).

    Linear warm-up from ``warmup_factor`` to 1 over ``warmup_epochs``, times ``gamma`` per milestone
    passed: epoch 1 -> 0.1, epoch 2 -> 0.19, ..., epoch 11 -> 1.0, epoch 31 -> 0.1 for milestones
    [30, 50, 70] (the reference's ``WarmupMultiStepLR`` stepped once per epoch).
    """

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1, warmup_factor: float = 0.1,
                 warmup_epochs: int = 10) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"train.stepsize must be increasing; got {list(milestones)}")
        self.milestones = [int(m) for m in milestones]
        self.gamma, self.warmup_factor, self.warmup_epochs = float(gamma), float(warmup_factor), int(warmup_epochs)

    def __call__(self, epoch: int) -> float:
        warmup = 1.0
        if epoch < self.warmup_epochs:
            alpha = epoch / self.warmup_epochs
            warmup = self.warmup_factor * (1 - alpha) + alpha
        return warmup * self.gamma ** bisect_right(self.milestones, epoch)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: CN) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch warm-up multi-step schedule (``train.stepsize``, ``train.gamma``, ``tfclip.warmup_*``).

    torchreid's ``Engine.update_lr`` steps it once after each epoch; its ``state_dict`` (checkpoints)
    holds plain numbers only.
    """
    stepsize = cfg.train.stepsize if isinstance(cfg.train.stepsize, (list, tuple)) else [cfg.train.stepsize]
    rule = WarmupMultiStep(stepsize, cfg.train.gamma, cfg.tfclip.warmup_factor, cfg.tfclip.warmup_epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, rule)
