"""What every engine of the plugin adds to torchreid's: the protocol evaluation, atomic checkpoints, stop
requests honoured at iteration boundaries and the preparation for a process group.

The mixins go in front of a torchreid engine class (``class E(CheckpointMixin, ProtocolEvaluationMixin,
DistributedMixin, host.Engine)``) so that TF-CLIP and torchreid baselines are tested with the same sampling and
protocol.
"""
from __future__ import annotations

import contextlib
import os.path as osp
import time
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from .. import host
from ..data.transforms import build_normaliser
from ..distributed import (
    NullSummaryWriter, gather_shards, is_distributed, is_main_process, max_over_ranks, save_on_main_process,
    shard_loader, training_epoch,
)
from ..evaluation import QUERY_IN_GALLERY, evaluate_distmat, protocol_gallery, resolve_protocol
from ..files.atomic import WriteFailedError
from ..files.checkpoint_file import checkpoint_path, load_checkpoint, rng_state, set_rng_state
from ..files.test_outputs import save_test_outputs, target_outputs_path
from ..stopping import TrainingStopped, raise_if_stop_requested, requested_signal
from .features import PRECISIONS, bf16_weights, dense_tracklet_features, loader_features
from .recovery import EvaluationFailedError

TEST_SAMPLINGS = ("dense", "rrs")


class ProtocolEvaluationMixin:
    """Replaces torchreid's ``Engine._evaluate``: tracklet features by ``tfclip.test_sampling``, ranking by
    ``tfclip.protocol`` (:attr:`protocol`), torchreid's distance, re-ranking and visrank; results kept in
    ``test_results``.

    'dense': all frames in consecutive ``video.seq_len`` chunks (``DenseClipDataset`` over the test tuples,
    ``test.batch_size`` chunks per forward, ``data.workers``), chunk features averaged per tracklet.
    Both run under autocast at ``test_precision`` (``tfclip.test_precision``, else ``tfclip.precision``).
    'rrs': torchreid's query/gallery loaders, one clip per tracklet. Image data ('image' sampling): torchreid's
    query/gallery loaders, one feature per image (batches of ``test.batch_size``, camera ids passed to SIE), and
    by default the standard image protocol ('torchreid'). Under torchrun every rank encodes a block
    of the tracklets and the features are gathered in dataset order; rank 0 alone writes test outputs and
    visrank. Subclasses define ``encode_clips``.

    Loaders ship uint8 clips (images); ``normaliser`` (``data.norm_mean`` / ``data.norm_std``) makes them
    normalised float32 on the engine's device, for evaluation and, through :meth:`training_input`, for training
    steps (float batches pass unchanged). With ``tfclip.test_precision`` 'bf16' evaluation, phase 1 and the
    stage-1 features run a bfloat16 copy of the model (:meth:`evaluation_weights`).

    A stop request (``stopping``) ends the evaluation before the next batch. When the evaluation of a run that
    trained fails (an unreadable test frame, a bad split), ``recovery.EvaluationFailedError`` names the checkpoint
    that keeps the training and the command that evaluates it once the data is fixed.
    """

    cfg: CN

    def setup_evaluation(self, cfg: CN) -> None:
        self.protocol = resolve_protocol(cfg.tfclip.protocol, cfg.data.type)
        if cfg.tfclip.test_sampling not in TEST_SAMPLINGS:
            raise ValueError(f"tfclip.test_sampling must be one of {', '.join(TEST_SAMPLINGS)}; "
                             f"got {cfg.tfclip.test_sampling!r}")
        if cfg.tfclip.test_precision not in ("",) + tuple(PRECISIONS):
            raise ValueError(f"tfclip.test_precision must be '' (= tfclip.precision) or one of "
                             f"{', '.join(PRECISIONS)}; got {cfg.tfclip.test_precision!r}")
        self.cfg = cfg
        self.normaliser = build_normaliser(cfg.data.norm_mean, cfg.data.norm_std)
        self.sampling_override: Optional[str] = None
        self.test_results: Dict[str, dict] = {}
        self.last_result: Optional[dict] = None
        self.test_seconds = 0.0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.use_gpu else "cpu")

    @property
    def image_data(self) -> bool:
        """True when the data manager serves images (torchreid's ``ImageDataManager``)."""
        return self.datamanager.data_type == "image"

    @property
    def test_sampling(self) -> str:
        """'image' for image data, else the override of a run that selects on the test set, else
        ``tfclip.test_sampling``."""
        if self.image_data:
            return "image"
        return self.sampling_override or self.cfg.tfclip.test_sampling

    @property
    def test_precision(self) -> str:
        """Precision of phase 1 and evaluation: ``tfclip.test_precision``, else ``tfclip.precision`` (autocast;
        'bf16' also with bfloat16 weights, :meth:`evaluation_weights`)."""
        return self.cfg.tfclip.test_precision or self.cfg.tfclip.precision

    def training_input(self, clips: torch.Tensor) -> torch.Tensor:
        """A training batch's clips (B, T, 3, H, W), uint8 from the loader, as normalised float32 on the device
        (on the CPU written into the normaliser's buffer, reused by every step; float clips pass unchanged)."""
        return self.normaliser.stream(self.device)(clips)

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[torch.nn.Module]:
        """Inside the block ``self.model`` (what ``encode_clips`` and torchreid's ``extract_features`` call) is the
        model phase 1 and evaluation run, and is yielded: under test precision 'bf16' a bfloat16 copy made now
        (the fp32 master weights and the optimizer are untouched), else the model itself."""
        model = self.model
        if self.test_precision != "bf16":
            yield model
            return
        self.model = bf16_weights(model)
        try:
            yield self.model
        finally:
            self.model = model

    def encode_clips(self, clips: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """Clip features (B, D) of clips (B, T, 3, H, W); torchreid's ``extract_features`` by default."""
        return self.extract_features(clips)

    def _encode_unless_stopped(self, clips: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        raise_if_stop_requested("evaluation", epoch=None if self.cfg.test.evaluate else int(self.epoch) + 1)
        return self.encode_clips(clips, camids)

    def tracklet_features(self, name: str, split: str, loader) -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """(features (N, D), pids (N,), camids (N,)) of the query or gallery tracklets (images) of target
        ``name``."""
        if self.test_sampling in ("rrs", "image"):
            return gather_shards(lambda block: loader_features(
                self._encode_unless_stopped, shard_loader(loader, block), self.device, self.test_precision,
                desc=f"{name} {split}", normaliser=self.normaliser,
            ), len(loader.dataset))
        from ..data.video import DenseClipDataset

        query, gallery = self.datamanager.fetch_test_loaders(name)
        tracklets = query if split == "query" else gallery
        features = gather_shards(lambda block: dense_tracklet_features(
            self._encode_unless_stopped,
            DenseClipDataset([tracklets[i] for i in block], self.datamanager.transform_te,
                             seq_len=self.cfg.video.seq_len),
            self.cfg.test.batch_size, self.cfg.data.workers, self.device, self.test_precision,
            desc=f"{name} {split} (dense)", normaliser=self.normaliser,
        ), len(tracklets))
        return features, np.array([t[1] for t in tracklets]), np.array([t[2] for t in tracklets])

    def test(self, *args, **kwargs):
        """torchreid's ``Engine.test``; a failure after training is an :class:`EvaluationFailedError` naming the
        trained checkpoint (``last_checkpoint``) and the command that evaluates it.

        Evaluation leaves the python, numpy and torch random streams as it found them (its loaders draw seeds
        from them): training after an evaluation draws what it would have drawn without one, so ``eval_freq``
        and test-set selection do not change the training, and a run resumed from the checkpoint written before
        an evaluation continues exactly as the uninterrupted run did."""
        streams = rng_state()
        try:
            return super().test(*args, **kwargs)
        except (WriteFailedError, TrainingStopped):
            raise
        except Exception as exc:
            checkpoint = getattr(self, "last_checkpoint", None)
            if checkpoint is None or self.cfg.test.evaluate or requested_signal():
                raise
            raise EvaluationFailedError(exc, checkpoint, int(getattr(self, "epoch", 0)) + 1,
                                        self.cfg.data.save_dir) from exc
        finally:
            set_rng_state(streams)

    @torch.no_grad()
    def _evaluate(
        self,
        dataset_name: str = "",
        query_loader=None,
        gallery_loader=None,
        dist_metric: str = "euclidean",
        normalize_feature: bool = False,
        visrank: bool = False,
        visrank_topk: int = 10,
        save_dir: str = "",
        use_metric_cuhk03: bool = False,
        ranks: Sequence[int] = (1, 5, 10, 20),
        rerank: bool = False,
    ):
        started = time.time()
        protocol, sampling = self.protocol, self.test_sampling
        print(f"Extracting features ({sampling} sampling) ...")
        with self.evaluation_weights():
            qf, q_pids, q_camids = self.tracklet_features(dataset_name, "query", query_loader)
            gf, g_pids, g_camids = self.tracklet_features(dataset_name, "gallery", gallery_loader)
        print(f"Query {tuple(qf.shape)}, gallery {tuple(gf.shape)}")
        if normalize_feature:
            qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
        gallery, gallery_pids, gallery_camids = protocol_gallery(protocol, qf, gf, q_pids, g_pids, q_camids, g_camids)
        items = "images" if self.image_data else "tracklets"
        print(f"Computing distances ({dist_metric}) against {len(gallery_pids)} gallery {items} "
              f"(protocol {protocol}) ...")
        distmat = host.compute_distance_matrix(qf, gallery, dist_metric).numpy()
        if rerank:
            print("Applying person re-ranking ...")
            distmat = host.re_ranking(distmat, host.compute_distance_matrix(qf, qf, dist_metric).numpy(),
                                      host.compute_distance_matrix(gallery, gallery, dist_metric).numpy())
        result = evaluate_distmat(distmat, q_pids, gallery_pids, q_camids, gallery_camids, protocol)
        result.update(test_sampling=sampling, epoch=int(getattr(self, "epoch", 0)) + 1, rerank=bool(rerank))
        self._print_result(result, ranks)
        if self.writer is not None:
            self.writer.add_scalar(f"Test/{dataset_name}/mINP", result["mINP"], self.epoch)

        query_tuples, gallery_tuples = self.datamanager.fetch_test_loaders(dataset_name)
        ranked_gallery = (list(query_tuples) if QUERY_IN_GALLERY[protocol] else []) + list(gallery_tuples)
        if visrank and is_main_process():
            host.visualize_ranked_results(
                distmat, (query_tuples, ranked_gallery), self.datamanager.data_type, width=self.datamanager.width,
                height=self.datamanager.height, save_dir=osp.join(save_dir, "visrank_" + dataset_name),
                topk=visrank_topk,
            )
        if self.cfg.tfclip.save_test_outputs and save_dir and is_main_process():
            save_test_outputs(target_outputs_path(save_dir, dataset_name), protocol,
                              (qf, q_pids, q_camids, query_tuples), (gf, g_pids, g_camids, gallery_tuples))
        self.test_seconds += time.time() - started
        self.test_results[dataset_name] = self.last_result = result
        return float(result["cmc"][0]), result["mAP"]

    @staticmethod
    def _print_result(result: dict, ranks: Sequence[int]) -> None:
        print(f"** Results ({result['protocol']} protocol, {result['test_sampling']} sampling, "
              f"{result['num_valid_queries']}/{result['num_query']} queries with a match) **")
        print(f"mAP: {result['mAP']:.1%}")
        print(f"mINP: {result['mINP']:.1%}")
        print("CMC curve")
        for r in ranks:
            if r <= len(result["cmc"]):
                print(f"Rank-{r:<3}: {result['cmc'][r - 1]:.1%}")


class IterationsUntilStopped:
    """A train loader as torchreid's ``Engine.train`` iterates it, asking before every batch (after the previous
    iteration's optimizer step) whether a stop signal was received. Under torchrun every rank gets the same
    answer (``distributed.max_over_ranks``, one all-reduce per iteration), so all ranks raise
    :class:`~tfclip_plugin.stopping.TrainingStopped` at the same iteration; a signal during the last iteration
    lets the epoch finish and its checkpoint be written first."""

    def __init__(self, loader, epoch: int) -> None:
        self.loader, self.epoch = loader, epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for iteration, batch in enumerate(self.loader):
            signum = max_over_ranks(requested_signal())
            if signum:
                raise TrainingStopped(signum, "training", epoch=self.epoch + 1, iteration=iteration,
                                      iterations=len(self.loader))
            yield batch


class CheckpointMixin:
    """Replaces torchreid's ``Engine.save_model``: atomic files, rank1 as float, config and RNG states
    inside; a ``model/checkpoint-latest.pth.tar`` after every epoch (resume, NaN reports); with
    ``tfclip.select_on_test`` the best R1+mAP checkpoint is kept as ``model-best.pth.tar`` (a resumed run takes
    up its score: :meth:`restore_selection`). ``train_seconds`` sums the wall time of the training epochs. Under torchrun rank 0 alone writes.
    Training iterates :class:`IterationsUntilStopped`: a stop request ends the epoch between two iterations,
    leaving the previous epoch's checkpoint as the latest."""

    cfg: CN
    last_checkpoint: Optional[str] = None
    best_checkpoint: Optional[str] = None
    best_score: float = float("-inf")
    best_epoch: Optional[int] = None
    scaler = None
    train_seconds = 0.0

    def checkpoint_state(self, epoch: int, rank1: float) -> dict:
        """torchreid's checkpoint dict for the 'model' registered in the engine, plus config/mAP/rng."""
        last = self.last_result or {}
        scheduler = self._scheds["model"]
        return {
            "state_dict": self._models["model"].state_dict(),
            "epoch": epoch + 1,
            "rank1": float(rank1),
            "mAP": float(last.get("mAP", 0.0)),
            "optimizer": self._optims["model"].state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "config": self.cfg.dump(),
            "rng": rng_state(),
        }

    def save_model(self, epoch: int, rank1: float, save_dir: str, is_best: bool = False) -> None:
        state = self.checkpoint_state(epoch, rank1)
        path = save_on_main_process(state, checkpoint_path(save_dir, "epoch", epoch + 1))
        print(f'Checkpoint saved to "{path}"')
        self.last_checkpoint = path
        if self.cfg.tfclip.select_on_test:
            score = state["rank1"] + state["mAP"]
            is_best = score > self.best_score
            if is_best:
                self.best_score, self.best_epoch = score, epoch + 1
                print(f"Test-set model selection: epoch {epoch + 1} is the best so far (R1+mAP {score:.4f})")
        if is_best:
            self.best_checkpoint = save_on_main_process(state, checkpoint_path(save_dir, "best"))

    def restore_selection(self, save_dir: str, epochs_done: int) -> None:
        """After resuming a run of ``save_dir`` at ``epochs_done`` epochs with ``tfclip.select_on_test``: take up
        the best R1+mAP so far from its ``model-best.pth.tar`` (score, epoch, path), so that the resumed run keeps
        and finally tests the checkpoint an uninterrupted run would. A best file of a later epoch belongs to a
        run resumed from an older checkpoint and is ignored (the next best evaluation replaces it)."""
        path = checkpoint_path(save_dir, "best")
        if not self.cfg.tfclip.select_on_test or not osp.isfile(path):
            return
        best = load_checkpoint(path, mmap=True)
        if int(best["epoch"]) > epochs_done:
            print(f"Test-set model selection: ignoring {path} (epoch {best['epoch']}, after the resumed epoch "
                  f"{epochs_done})")
            return
        self.best_score = float(best["rank1"]) + float(best["mAP"])
        self.best_epoch, self.best_checkpoint = int(best["epoch"]), path
        print(f"Test-set model selection: the best so far is epoch {self.best_epoch} (R1+mAP {self.best_score:.4f})")

    def train(self, print_freq: int = 10, fixbase_epoch: int = 0, open_layers=None) -> None:
        started = time.time()
        loader = self.train_loader
        self.train_loader = IterationsUntilStopped(loader, self.epoch)
        try:
            with training_epoch(loader, self.model, self.epoch, self.cfg.train.seed):
                super().train(print_freq=print_freq, fixbase_epoch=fixbase_epoch, open_layers=open_layers)
        finally:
            self.train_loader = loader
        self.train_seconds += time.time() - started
        save_dir = self.writer.get_logdir() if self.writer is not None else self.cfg.data.save_dir
        rank1 = float(self.last_result["cmc"][0]) if self.last_result else 0.0
        self.last_checkpoint = save_on_main_process(self.checkpoint_state(self.epoch, rank1),
                                                    checkpoint_path(save_dir, "latest"))


class DistributedMixin:
    """``prepare_distributed``: how an engine adapts itself to the process group it runs in (no-op outside one).

    Every rank tests with the engine's own model (features sharded and gathered by the evaluation); ranks other
    than 0 get a ``NullSummaryWriter``. Training needs :meth:`prepare_distributed_training`, which only engines
    that support it define (``TFCLIPEngine``); torchreid's models train in one process.
    """

    cfg: CN

    def prepare_distributed(self) -> None:
        if not is_distributed():
            return
        if not is_main_process():
            self.writer = NullSummaryWriter(self.cfg.data.save_dir)
        if not self.cfg.test.evaluate:
            self.prepare_distributed_training()

    def prepare_distributed_training(self) -> None:
        raise ValueError(f"training under torchrun supports TF-CLIP models (tfclip_*); got model.name "
                         f"{self.cfg.model.name!r}: train torchreid models in one process (testing them works)")
