"""TFCLIPEngine: torchreid's Engine with TF-CLIP's two phases, overriding hooks only.

Reused from torchreid: the epoch loop, evaluation schedule and writer of ``Engine.run``; timing, printing and
tensorboard scalars of ``Engine.train``; ``test``; ``update_lr`` (the schedule steps once per epoch).
Overridden: ``run`` (phase 1 before the first epoch; test-set model selection only when asked),
``two_stepped_transfer_learning`` (a no-op, so the model's frozen BN biases stay frozen),
``parse_data_for_train`` (5-D clips and camera ids), ``forward_backward`` (uint8 clips normalised on the
device, TF-CLIP losses, autocast, GradScaler for fp16, ``tfclip.compile``) and, through the mixins,
``_evaluate`` and ``save_model``.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Tuple

import torch
from yacs.config import CfgNode as CN

from .. import host
from ..checkpoint import load_checkpoint, state_dict_of
from ..distributed import is_main_process, load_on_main_process, main_process_value
from .features import autocast
from .losses import TFCLIPLoss
from .memory import build_clip_memory, load_cached_memory, memory_cache_key, store_cached_memory
from .mixins import CheckpointMixin, ProtocolEvaluationMixin
from .optim import backward_and_step

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_TEST_KWARGS = ("dist_metric", "normalize_feature", "visrank", "visrank_topk", "use_metric_cuhk03", "ranks", "rerank")
SELECTION_EVAL_FREQ = 2  # the reference evaluates (and selects) every 2 epochs


class TFCLIPEngine(CheckpointMixin, ProtocolEvaluationMixin, host.Engine):
    """Phase 1 (CLIP-Memory) + phase 2 (V2M, ID, triplet and frame losses) for a ``TFCLIP`` model.

    Args:
        datamanager: torchreid ``VideoDataManager`` from ``data.build_datamanager`` (batches
            ``{'img' (B,T,3,H,W), 'pid', 'camid'}``).
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
            num_classes=model.num_classes, label_smooth=t.label_smooth, margin=t.margin,
            v2m_weight=t.v2m_loss_weight, id_weight=t.id_loss_weight, triplet_weight=t.triplet_loss_weight,
            use_gpu=self.use_gpu,
        )
        autocast(self.device, t.precision)  # validates tfclip.precision
        if t.compile and t.compile not in COMPILE_MODES:
            raise ValueError(f"tfclip.compile must be '' (off) or a torch.compile mode ({', '.join(COMPILE_MODES)}); "
                             f"got {t.compile!r}")
        self.scaler = torch.amp.GradScaler(self.device.type) if t.precision == "fp16" else None
        self.phase1_seconds = 0.0
        self._compiled: Optional[Tuple[torch.nn.Module, Callable]] = None

    # phase 1 ------------------------------------------------------------------------------------------
    def memory_settings(self) -> Dict[str, object]:
        """What the memory depends on besides the weights and the tracklets (part of the cache key)."""
        cfg = self.cfg
        return {
            "model": cfg.model.name, "height": cfg.data.height, "width": cfg.data.width,
            "norm_mean": list(cfg.data.norm_mean), "norm_std": list(cfg.data.norm_std),
            "seq_len": cfg.video.seq_len,
            "precision": "bf16 weights" if self.test_precision == "bf16" else self.test_precision,
        }

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
            print(f"=> Phase 1: CLIP-Memory from {len(tracklets)} training tracklets "
                  f"(frozen encoder, dense {cfg.video.seq_len}-frame chunks, no SIE)")
            with self.evaluation_weights() as model:
                memory = build_clip_memory(
                    model, tracklets, self.datamanager.transform_te, model.num_classes,
                    seq_len=cfg.video.seq_len, batch_size=cfg.test.batch_size, workers=cfg.data.workers,
                    device=self.device, precision=self.test_precision, normaliser=self.normaliser,
                )
            if key is not None and is_main_process():
                store_cached_memory(cfg.tfclip.memory_cache, key, memory, self.memory_settings())
        self.model.set_memory(memory.to(self.device))
        self.phase1_seconds = time.time() - started
        print(f"=> Phase 1 done in {self.phase1_seconds:.1f} s")
        return memory

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
        return data["img"], data["pid"], data["camid"]

    def encode_clips(self, clips: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """Test features (B, D) with the camera ids reaching SIE."""
        return self.model(clips, camids)

    def training_forward(self) -> Callable:
        """``training_model`` (the model, or DistributedDataParallel around it), wrapped on first use by
        ``torch.compile(mode=tfclip.compile)`` when that is set. Checkpoints keep the model's own state dict."""
        mode = self.cfg.tfclip.compile
        if not mode:
            return self.training_model
        if self._compiled is None or self._compiled[0] is not self.training_model:
            self._compiled = (self.training_model, torch.compile(self.training_model, mode=mode))
        return self._compiled[1]

    def forward_backward(self, data) -> Dict[str, float]:
        imgs, pids, camids = self.parse_data_for_train(data)
        imgs = self.training_input(imgs)
        pids, camids = pids.to(self.device), camids.to(self.device)
        with autocast(self.device, self.cfg.tfclip.precision):
            output = self.training_forward()(imgs, camids)
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

