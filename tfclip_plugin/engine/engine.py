"""TFCLIPEngine: torchreid's Engine with TF-CLIP's two phases, overriding hooks only.

Reused from torchreid: the epoch loop, evaluation schedule and writer of ``Engine.run``; timing, printing and
tensorboard scalars of ``Engine.train``; ``test``; ``update_lr`` (the schedule steps once per epoch).
Overridden: ``run`` (phase 1 before the first epoch; test-set model selection only when asked),
``two_stepped_transfer_learning`` (a no-op, so the model's frozen BN biases stay frozen),
``parse_data_for_train`` (5-D clips and camera ids; an image batch (B, 3, H, W) becomes B one-frame clips),
``forward_backward`` (TF-CLIP losses, autocast, GradScaler for fp16) and, through the mixins, ``_evaluate`` and
``save_model``.
"""
from __future__ import annotations

import time
from typing import Dict

import torch
from yacs.config import CfgNode as CN

from torch.nn.parallel import DistributedDataParallel

from .. import host
from ..distributed import (
    backend, convert_bnnecks_to_sync_bn, distributed_train_loader, is_main_process, load_on_main_process, main_process_value,
    rank, world_size,
)
from ..files.checkpoint_file import load_checkpoint, state_dict_of
from .features import autocast
from .losses import CrossRankTripletLoss, TFCLIPLoss
from .memory import build_clip_memory, build_image_memory, load_cached_memory, memory_cache_key, store_cached_memory
from .mixins import CheckpointMixin, DistributedMixin, ProtocolEvaluationMixin
from .optim import backward_and_step

_TEST_KWARGS = ("dist_metric", "normalize_feature", "visrank", "visrank_topk", "use_metric_cuhk03", "ranks", "rerank")
SELECTION_EVAL_FREQ = 2  # the reference evaluates (and selects) every 2 epochs


class TFCLIPEngine(CheckpointMixin, ProtocolEvaluationMixin, DistributedMixin, host.Engine):
    """Phase 1 (CLIP-Memory) + phase 2 (V2M, ID, triplet and frame losses) for a ``TFCLIP`` model.

    Args:
        datamanager: torchreid ``VideoDataManager`` or ``ImageDataManager`` from ``data.build_datamanager``
            (batches ``{'img' (B,T,3,H,W) or (B,3,H,W), 'pid', 'camid'}``).
        model: ``TFCLIP`` (train mode returns ``TFCLIPOutput``; eval mode (B, D) features).
        optimizer, scheduler: from ``engine.optim.build_optimizer`` / ``build_scheduler``.
        cfg: the run config (``tfclip.*``, ``video.seq_len``, ``test.batch_size``, ``data.workers``).
    """

    def __init__(self, datamanager, model, optimizer, scheduler, cfg: CN) -> None:
        super().__init__(datamanager, use_gpu=cfg.use_gpu)
        if cfg.train.fixbase_epoch > 0:
            raise ValueError("train.fixbase_epoch must be 0 for TF-CLIP: the model decides what trains")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.training_model = model  # what forward_backward calls: DistributedDataParallel(model) under torchrun
        self.register_model("model", model, optimizer, scheduler)
        self.setup_evaluation(cfg)
        t = cfg.tfclip
        self.criterion = TFCLIPLoss(
            num_classes=model.num_classes, label_smooth=0.1 if cfg.loss.softmax.label_smooth else 0.0,
            margin=cfg.loss.triplet.margin,
            v2m_weight=t.v2m_loss_weight, id_weight=t.id_loss_weight, triplet_weight=t.triplet_loss_weight,
            use_gpu=self.use_gpu,
        )
        autocast(self.device, t.precision)  # validates tfclip.precision
        self.scaler = torch.amp.GradScaler(self.device.type) if t.precision == "fp16" else None
        self.phase1_seconds = 0.0

    def prepare_distributed_training(self, start_epoch: int) -> None:
        """Training in a process group: the train loader from ``distributed.distributed_train_loader``, the
        BNNecks as SyncBatchNorm with ``tfclip.sync_bn``, ``training_model`` = DistributedDataParallel(model),
        triplet mining over the global batch (:class:`CrossRankTripletLoss`), and augmentation streams seeded per
        rank (ranks other than 0 from ``train.seed + rank + world x start_epoch``; rank 0 keeps its own,
        restored on resume)."""
        cfg = self.cfg
        device = next(self.model.parameters()).device
        if cfg.tfclip.sync_bn:
            if device.type != "cuda":
                raise ValueError("tfclip.sync_bn needs GPUs (use_gpu True): torch's SyncBatchNorm syncs CUDA tensors "
                                 "only")
            print(f"SyncBatchNorm for {', '.join(convert_bnnecks_to_sync_bn(self.model))}")
        loader = distributed_train_loader(self.train_loader, cfg.sampler.train_sampler, cfg.train.batch_size,
                                          cfg.sampler.num_instances, cfg.train.seed)
        self.train_loader = self.datamanager.train_loader = loader
        self.training_model = DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.criterion.triplet = CrossRankTripletLoss(self.criterion.triplet)
        if not is_main_process():
            host.set_random_seed(cfg.train.seed + rank() + world_size() * start_epoch)
        print(f"DistributedDataParallel over {world_size()} processes ({backend()}): "
              f"{cfg.train.batch_size // world_size()} of each batch of {cfg.train.batch_size} tracklets per process")

    # phase 1 ------------------------------------------------------------------------------------------
    def memory_settings(self) -> Dict[str, object]:
        """What the memory depends on besides the weights and the tracklets (part of the cache key)."""
        cfg = self.cfg
        settings = {
            "model": cfg.model.name, "height": cfg.data.height, "width": cfg.data.width,
            "norm_mean": list(cfg.data.norm_mean), "norm_std": list(cfg.data.norm_std),
            "seq_len": cfg.video.seq_len, "precision": self.test_precision,
        }
        if self.image_data:
            settings.update(data_type="image", seq_len=1)
        return settings

    def build_memory(self) -> torch.Tensor:
        """Phase 1: compute (or read from ``tfclip.memory_cache``) the CLIP-Memory and store it in the model."""
        started = time.time()
        cfg = self.cfg
        tracklets = self.datamanager.train_loader.dataset.train
        memory, key = None, None
        if cfg.tfclip.memory_cache:
            key = memory_cache_key(self.model, tracklets, self.memory_settings())
            memory = main_process_value(lambda: load_cached_memory(cfg.tfclip.memory_cache, key))
            if memory is not None:
                print(f"=> Phase 1: CLIP-Memory {tuple(memory.shape)} read from the cache ({key})")
        if memory is None:
            memory = self.compute_memory(tracklets)
            if key is not None and is_main_process():
                store_cached_memory(cfg.tfclip.memory_cache, key, memory, self.memory_settings())
        self.model.set_memory(memory.to(self.device))
        self.phase1_seconds = time.time() - started
        print(f"=> Phase 1 done in {self.phase1_seconds:.1f} s")
        return memory

    def compute_memory(self, items) -> torch.Tensor:
        """The CLIP-Memory of the training tracklets (dense chunks) or images (one-frame clips) ``items``."""
        cfg = self.cfg
        common = dict(workers=cfg.data.workers, device=self.device, precision=self.test_precision)
        if self.image_data:
            print(f"=> Phase 1: CLIP-Memory from {len(items)} training images (frozen encoder, no SIE)")
            return build_image_memory(self.model, items, self.datamanager.transform_te, self.model.num_classes,
                                      batch_size=cfg.test.batch_size, **common)
        print(f"=> Phase 1: CLIP-Memory from {len(items)} training tracklets "
              f"(frozen encoder, dense {cfg.video.seq_len}-frame chunks, no SIE)")
        return build_clip_memory(self.model, items, self.datamanager.transform_te, self.model.num_classes,
                                 seq_len=cfg.video.seq_len, batch_size=cfg.test.batch_size, **common)

    def needs_memory(self) -> bool:
        return bool(self.cfg.tfclip.memory) and not bool(self.model.memory_ready)

    # run ----------------------------------------------------------------------------------------------
    def run(self, save_dir: str = "log", max_epoch: int = 0, start_epoch: int = 0, eval_freq: int = -1,
            test_only: bool = False, **kwargs) -> None:
        """torchreid's ``Engine.run`` preceded by phase 1 (skipped when the model carries a memory, e.g. on
        resume). With ``tfclip.select_on_test`` the run evaluates RRS-test clips every ``eval_freq`` (2 if
        unset) epochs, keeps the best R1+mAP checkpoint and finally tests that one with ``tfclip.test_sampling``
        (the reference's test-set model selection)."""
        if test_only:
            super().run(save_dir=save_dir, test_only=True, **kwargs)
            return
        if self.needs_memory():
            self.build_memory()
        select = bool(self.cfg.tfclip.select_on_test)
        if select:
            eval_freq = eval_freq if eval_freq > 0 else SELECTION_EVAL_FREQ
            print("*** tfclip.select_on_test True: the best epoch is chosen ON THE TEST SET (R1+mAP of RRS-test "
                  f"clips every {eval_freq} epochs), the reference's rule; not a clean protocol ***")
            self.sampling_override = "rrs"
        self.epoch = max(start_epoch - 1, 0)
        try:
            super().run(save_dir=save_dir, max_epoch=max_epoch, start_epoch=start_epoch, eval_freq=eval_freq,
                        test_only=False, **kwargs)
        finally:
            self.sampling_override = None
        if select and self.best_checkpoint is not None:
            print(f"=> Test-set-selected model: epoch {self.best_epoch} ({self.best_checkpoint}); final test "
                  f"with {self.cfg.tfclip.test_sampling} sampling")
            load_on_main_process(self.model, lambda: state_dict_of(load_checkpoint(self.best_checkpoint)))
            self.test(save_dir=save_dir, **{k: v for k, v in kwargs.items() if k in _TEST_KWARGS})

    def two_stepped_transfer_learning(self, epoch, fixbase_epoch, open_layers, model=None) -> None:
        """No-op: torchreid's version sets ``requires_grad`` on every parameter, unfreezing the BN biases."""

    # phase 2 ------------------------------------------------------------------------------------------
    def parse_data_for_train(self, data):
        """(clips (B, T, 3, H, W), pids, camids); an image batch (B, 3, H, W) is B one-frame clips."""
        imgs = data["img"]
        return (imgs.unsqueeze(1) if imgs.dim() == 4 else imgs), data["pid"], data["camid"]

    def encode_clips(self, clips: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """Test features (B, D) with the camera ids reaching SIE."""
        return self.model(clips, camids)

    def forward_backward(self, data) -> Dict[str, float]:
        imgs, pids, camids = self.parse_data_for_train(data)
        imgs = imgs.to(self.device, non_blocking=True)
        pids, camids = pids.to(self.device), camids.to(self.device)
        with autocast(self.device, self.cfg.tfclip.precision):
            output = self.training_model(imgs, camids)
        terms = self.criterion(output, pids)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            values = ", ".join(f"{k} {v.item():.4g}" for k, v in terms.items())
            raise FloatingPointError(
                f"non-finite loss at epoch {self.epoch + 1}, iteration {self.batch_idx + 1} ({values}); "
                f"last good checkpoint: {self.last_checkpoint or 'none written yet'}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        backward_and_step(loss, self.optimizer, self.scaler)
        summary = {k: v.item() for k, v in terms.items()}
        head = output.v2m_logits if output.v2m_logits is not None else output.logits[0]
        summary["acc_v2m" if output.v2m_logits is not None else "acc"] = (
            (head.argmax(1) == pids).float().mean().item()
        )
        return summary

