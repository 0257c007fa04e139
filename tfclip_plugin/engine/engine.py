"""TFCLIPEngine: torchreid's Engine with TF-CLIP's two phases, overriding hooks only.

Phase 1 builds the class table before the first epoch: the CLIP-Memory (``tfclip.memory clip``), or in text
mode CLIP-ReID's stage 1 (prompt learning, ``engine.prompt_learning``) followed by the text features of every
identity; phase 2 trains with the table fixed (V2M or image-to-text cross-entropy).

Reused from torchreid: the epoch loop, evaluation schedule and writer of ``Engine.run``; timing, printing and
tensorboard scalars of ``Engine.train``; ``test``; ``update_lr`` (the schedule steps once per epoch).
Overridden: ``run`` (phase 1 before the first epoch; test-set model selection only when asked),
``two_stepped_transfer_learning`` (a no-op, so the model's frozen BN biases stay frozen),
``parse_data_for_train`` (5-D clips and camera ids; an image batch (B, 3, H, W) becomes B one-frame clips),
``forward_backward`` (uint8 clips normalised on the device, TF-CLIP losses, autocast, GradScaler for fp16,
``tfclip.compile``) and, through the mixins, ``_evaluate`` and ``save_model``.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from yacs.config import CfgNode as CN

from torch.nn.parallel import DistributedDataParallel

from .. import host
from ..distributed import (
    backend, broadcast_tensors, convert_bnnecks_to_sync_bn, distributed_train_loader, is_main_process,
    load_on_main_process, main_process_value, save_on_main_process, world_size,
)
from ..files.checkpoint_file import checkpoint_path, load_checkpoint, state_dict_of
from .features import autocast
from .losses import CrossRankTripletLoss, TFCLIPLoss
from .memory import (
    as_tracklets, build_clip_memory, load_cached_memory, memory_cache_key, store_cached_memory, training_features,
)
from .mixins import CheckpointMixin, DistributedMixin, ProtocolEvaluationMixin
from .optim import backward_and_step
from .prompt_learning import PromptLearningSchedule, learn_prompts, text_image_accuracy

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_TEST_KWARGS = ("dist_metric", "normalize_feature", "visrank", "visrank_topk", "use_metric_cuhk03", "ranks", "rerank")
SELECTION_EVAL_FREQ = 2  # the reference evaluates (and selects) every 2 epochs


class TFCLIPEngine(CheckpointMixin, ProtocolEvaluationMixin, DistributedMixin, host.Engine):
    """Phase 1 (CLIP-Memory, or stage 1 + text features in text mode) + phase 2 (V2M or image-to-text, ID,
    triplet and frame losses) for a ``TFCLIP`` model.

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
            use_gpu=self.use_gpu, table="i2t" if model.memory_mode == "text" else "v2m",
        )
        autocast(self.device, t.precision)  # validates tfclip.precision
        if t.compile and t.compile not in COMPILE_MODES:
            raise ValueError(f"tfclip.compile must be '' (off) or a torch.compile mode ({', '.join(COMPILE_MODES)}); "
                             f"got {t.compile!r}")
        self.scaler = torch.amp.GradScaler(self.device.type) if t.precision == "fp16" else None
        self.phase1_seconds = 0.0
        self.stage1_history: Dict[str, object] = {}
        self._compiled: Optional[Tuple[torch.nn.Module, Callable]] = None

    def prepare_distributed_training(self) -> None:
        """Training in a process group: the train loader from ``distributed.distributed_train_loader``, the
        BNNecks as SyncBatchNorm with ``tfclip.sync_bn``, ``training_model`` = DistributedDataParallel(model)
        and triplet mining over the global batch (:class:`CrossRankTripletLoss`). The random streams of every rank
        are reseeded at the start of every epoch (``distributed.training_epoch``: ``train.seed + rank + world x
        epoch``), so a resumed or restarted run draws what the uninterrupted run draws."""
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
        print(f"DistributedDataParallel over {world_size()} processes ({backend()}): "
              f"{cfg.train.batch_size // world_size()} of each batch of {cfg.train.batch_size} tracklets per process")

    # phase 1 ------------------------------------------------------------------------------------------
    def memory_settings(self) -> Dict[str, object]:
        """What the memory depends on besides the weights and the tracklets (part of the cache key)."""
        cfg = self.cfg
        settings = {
            "model": cfg.model.name, "height": cfg.data.height, "width": cfg.data.width,
            "norm_mean": list(cfg.data.norm_mean), "norm_std": list(cfg.data.norm_std),
            "seq_len": cfg.video.seq_len,
            "precision": "bf16 weights" if self.test_precision == "bf16" else self.test_precision,
        }
        if self.image_data:
            settings.update(data_type="image", seq_len=1)
        return settings

    def _training_tracklets(self):
        """(training tracklets, frames per dense chunk): images are one-frame tracklets seen one frame at a time."""
        tracklets, images = as_tracklets(self.datamanager.train_loader.dataset.train)
        return tracklets, 1 if images else self.cfg.video.seq_len

    def build_memory(self) -> torch.Tensor:
        """Phase 1: the class table, stored in the model. ``tfclip.memory clip``: the CLIP-Memory, computed or read
        from ``tfclip.memory_cache``; text mode: :meth:`learn_prompts` then the identities' text features."""
        if self.model.memory_mode == "text":
            return self.learn_prompts()
        started = time.time()
        cfg = self.cfg
        tracklets, seq_len = self._training_tracklets()
        memory = self._cached_training_pass(
            "clip-memory", tracklets,
            f"=> Phase 1: CLIP-Memory from {len(tracklets)} training tracklets (frozen encoder, dense {seq_len}-frame "
            "chunks, no SIE)",
            lambda model: build_clip_memory(
                model, tracklets, self.datamanager.transform_te, model.num_classes,
                seq_len=seq_len, batch_size=cfg.test.batch_size, workers=cfg.data.workers,
                device=self.device, precision=self.test_precision, normaliser=self.normaliser,
            ),
            lambda memory, key: f"=> Phase 1: CLIP-Memory {tuple(memory.shape)} read from the cache ({key})",
        )
        self.model.set_memory(memory.to(self.device))
        self.phase1_seconds = time.time() - started
        print(f"=> Phase 1 done in {self.phase1_seconds:.1f} s")
        return memory

    def stage1_features(self):
        """(features (N, E), labels (N,)): one projected CLS per training tracklet or image (frozen encoder, no
        SIE), computed once (``memory.training_features``) or read from ``tfclip.memory_cache``."""
        cfg = self.cfg
        tracklets, seq_len = self._training_tracklets()
        labels = torch.tensor([int(t[1]) for t in tracklets])
        features = self._cached_training_pass(
            "stage1-features", tracklets,
            f"=> Stage 1: features of {len(tracklets)} training {'images' if seq_len == 1 else 'tracklets'} "
            f"(frozen encoder, {seq_len}-frame chunks, no SIE)",
            lambda model: training_features(
                model, tracklets, self.datamanager.transform_te, seq_len=seq_len,
                batch_size=cfg.test.batch_size, workers=cfg.data.workers, device=self.device,
                precision=self.test_precision, desc="Stage-1 features", normaliser=self.normaliser,
            ),
            lambda features, key: f"=> Stage 1: {features.shape[0]} training features read from the cache ({key})",
        )
        return features, labels

    def _cached_training_pass(self, kind: str, tracklets: Sequence[tuple], computing: str,
                              compute: Callable[[torch.nn.Module], torch.Tensor],
                              cached: Callable[[torch.Tensor, str], str]) -> torch.Tensor:
        """A tensor of ``kind`` over the training ``tracklets``: read from ``tfclip.memory_cache`` (rank 0 reads,
        every rank gets it; ``cached(value, key)`` is printed), else ``compute(model)`` (``computing`` printed) on the
        evaluation weights, stored in the cache by rank 0. The key: the encoder, the tracklets and
        :meth:`memory_settings`."""
        cache = self.cfg.tfclip.memory_cache
        key = memory_cache_key(self.model, tracklets, self.memory_settings()) if cache else None
        if key is not None:
            value = main_process_value(lambda: load_cached_memory(cache, key, kind))
            if value is not None:
                print(cached(value, key))
                return value
        print(computing)
        with self.evaluation_weights() as model:
            value = compute(model)
        if key is not None and is_main_process():
            store_cached_memory(cache, key, value, self.memory_settings(), kind)
        return value

    def prompt_schedule(self) -> PromptLearningSchedule:
        t = self.cfg.tfclip
        return PromptLearningSchedule(
            epochs=t.stage1_epochs, batch_size=t.stage1_batch_size, lr=t.stage1_lr, weight_decay=t.stage1_weight_decay,
            min_lr=t.stage1_min_lr, warmup_epochs=t.stage1_warmup_epochs, warmup_lr=t.stage1_warmup_lr)

    def learn_prompts(self) -> torch.Tensor:
        """Text mode's phase 1: CLIP-ReID's stage 1 (``engine.prompt_learning.learn_prompts`` on
        :meth:`stage1_features`), then the text features of every identity, fixed as the class table.

        Under torchrun every rank runs the same seeded stage 1 on the same gathered features; rank 0's identity
        tokens and table are then broadcast, so every rank holds exactly the same ones. Prints the
        text/image accuracies before and after."""
        started = time.time()
        schedule = self.prompt_schedule()
        features, labels = self.stage1_features()
        model = self.model
        before = text_image_accuracy(features, labels, self.identity_text_features())
        print(f"=> Stage 1: prompt learning for {schedule.epochs} epochs, batches of {schedule.batch_size}, Adam lr "
              f"{schedule.lr:g} (cosine, {schedule.warmup_epochs} warm-up epochs); only the identity tokens train")
        history = learn_prompts(model, features.to(self.device), labels, schedule, precision=self.cfg.tfclip.precision,
                                seed=self.cfg.train.seed)
        broadcast_tensors([model.text.prompt_learner.cls_ctx])
        table = self.identity_text_features()
        broadcast_tensors([table])
        model.set_memory(table)
        after = text_image_accuracy(features, labels, table)
        self.stage1_history = {"loss": history, "accuracy_before": before, "accuracy_after": after}
        self.phase1_seconds = time.time() - started
        print(f"=> Stage 1 done in {self.phase1_seconds:.1f} s: loss {history[0]:.4f} -> {history[-1]:.4f}; "
              f"image-to-text accuracy {before['i2t']:.1%} -> {after['i2t']:.1%}, text-to-image "
              f"{before['t2i']:.1%} -> {after['t2i']:.1%} (training features)")
        return table

    def identity_text_features(self) -> torch.Tensor:
        """(C, E) text features of every identity, on the engine's device, under ``test_precision`` autocast."""
        with autocast(self.device, self.test_precision):
            return self.model.identity_text_features(self.cfg.test.batch_size).float()

    def save_stage1_checkpoint(self, save_dir: str) -> str:
        """``checkpoint-latest`` after stage 1 (``epoch`` 0): resuming from it skips stage 1."""
        self.last_checkpoint = save_on_main_process(self.checkpoint_state(-1, 0.0), checkpoint_path(save_dir, "latest"))
        print(f"Stage-1 checkpoint saved to \"{self.last_checkpoint}\"")
        return self.last_checkpoint

    def needs_memory(self) -> bool:
        return self.model.memory_mode != "none" and not bool(self.model.memory_ready)

    # run ----------------------------------------------------------------------------------------------
    def run(self, save_dir: str = "log", max_epoch: int = 0, start_epoch: int = 0, eval_freq: int = -1,
            test_only: bool = False, **kwargs) -> None:
        """torchreid's ``Engine.run`` preceded by phase 1 (skipped when the model carries its class table, e.g. on
        resume; in text mode followed by a checkpoint, so that stage 1 is never repeated). With
        ``tfclip.select_on_test`` the run evaluates RRS-test clips every ``eval_freq`` (2 if unset) epochs, keeps
        the best R1+mAP checkpoint and finally tests that one with ``tfclip.test_sampling`` (the reference's
        test-set model selection)."""
        if test_only:
            super().run(save_dir=save_dir, test_only=True, **kwargs)
            return
        if self.needs_memory():
            self.build_memory()
            if self.model.memory_mode == "text":
                self.save_stage1_checkpoint(save_dir)
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
        table = self.criterion.table
        table_logits = getattr(output, f"{table}_logits")
        head = table_logits if table_logits is not None else output.logits[0]
        summary[f"acc_{table}" if table_logits is not None else "acc"] = (head.argmax(1) == pids).float().mean().item()
        return summary

