"""Building a run's parts from its config: model, weights, optimizer and schedule, engine.

TF-CLIP models are built directly from the config's model options (``config.model_options``), without the
active config; torchreid's models through torchreid's ``build_model``.
"""
from __future__ import annotations

import warnings

import torch
from yacs.config import CfgNode as CN

from .. import host
from ..config import is_tfclip_run, model_options
from ..models import ARCHITECTURES, build_tfclip, load_weights as load_model_weights
from .baselines import (
    ImageSoftmaxBaselineEngine, ImageTripletBaselineEngine, VideoSoftmaxBaselineEngine, VideoTripletBaselineEngine,
)
from .engine import TFCLIPEngine
from .optim import build_optimizer, build_scheduler
from .preflight import sie_table_size


def build_model(cfg: CN, datamanager) -> torch.nn.Module:
    """The run's model: ``tfclip_*`` from ``model_options(cfg)`` (``tfclip.num_cameras`` 0 -> an SIE table over
    the camera ids of every training, query and gallery split, ``preflight.sie_table_size``), any other name
    through torchreid's ``build_model``."""
    num_classes = datamanager.num_train_pids
    if is_tfclip_run(cfg):
        options = model_options(cfg)
        uses_sie = options.sie and ARCHITECTURES.get(cfg.model.name) == "vit"
        num_cameras = int(cfg.tfclip.num_cameras) or sie_table_size(datamanager, warn=uses_sie)
        return build_tfclip(cfg.model.name, num_classes, num_cameras, pretrained=cfg.model.pretrained,
                            height=cfg.data.height, width=cfg.data.width, loss=cfg.loss.name, **options.as_dict())
    return host.models.build_model(name=cfg.model.name, num_classes=num_classes, loss=cfg.loss.name,
                                   pretrained=cfg.model.pretrained, use_gpu=cfg.use_gpu)


def load_weights(model: torch.nn.Module, path: str) -> None:
    """``model.load_weights``: ``models.load_weights`` (our checkpoints strictly, official TF-CLIP files, or
    torchreid's name-and-shape rule for other models), with a one-line report; a warning when a pre-release
    official checkpoint meets a model whose SSP residual is not the pre-release one."""
    report = load_model_weights(model, path)
    print(f"Loaded weights from {path}: {report}")
    if report.get("generation") == "pre-release" and getattr(model, "ssp_residual", None) == "update" \
            and getattr(model, "ssp", None) is not None:
        warnings.warn(f"{path} is a pre-release checkpoint (LS-VID / iLIDS-VID): its code trained V2M against "
                      "2M + delta; set tfclip.ssp_residual pre-release (and tfclip.ssp paper) to fine-tune it the "
                      "same way", stacklevel=2)


def build_optimization(cfg: CN, model):
    """(optimizer, scheduler): TF-CLIP's rules for ``tfclip_*``, torchreid's builders otherwise."""
    if is_tfclip_run(cfg):
        optimizer = build_optimizer(model, cfg)
        return optimizer, build_scheduler(optimizer, cfg)
    optimizer = host.build_optimizer(
        model, optim=cfg.train.optim, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
        momentum=cfg.sgd.momentum, sgd_dampening=cfg.sgd.dampening, sgd_nesterov=cfg.sgd.nesterov,
        rmsprop_alpha=cfg.rmsprop.alpha, adam_beta1=cfg.adam.beta1, adam_beta2=cfg.adam.beta2,
        staged_lr=cfg.train.staged_lr, new_layers=cfg.train.new_layers, base_lr_mult=cfg.train.base_lr_mult,
    )
    scheduler = host.build_lr_scheduler(optimizer, lr_scheduler=cfg.train.lr_scheduler, stepsize=cfg.train.stepsize,
                                        gamma=cfg.train.gamma, max_epoch=cfg.train.max_epoch)
    return optimizer, scheduler


def build_engine(cfg: CN, datamanager, model, optimizer, scheduler):
    """TFCLIPEngine for ``tfclip_*`` models; otherwise torchreid's video or image engine (``data.type``) chosen by
    ``loss.name``."""
    if is_tfclip_run(cfg):
        return TFCLIPEngine(datamanager, model, optimizer, scheduler, cfg)
    engines = {"softmax": ImageSoftmaxBaselineEngine, "triplet": ImageTripletBaselineEngine} \
        if cfg.data.type == "image" else {"softmax": VideoSoftmaxBaselineEngine, "triplet": VideoTripletBaselineEngine}
    if cfg.loss.name not in engines:
        raise ValueError(f"loss.name must be 'softmax' or 'triplet' for torchreid models; got {cfg.loss.name!r}")
    return engines[cfg.loss.name](datamanager, model, optimizer, scheduler, cfg)
