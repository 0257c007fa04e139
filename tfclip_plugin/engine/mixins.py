"""What every engine of the plugin adds to torchreid's: the protocol evaluation and atomic checkpoints.

Both mixins go in front of a torchreid engine class (``class E(CheckpointMixin, ProtocolEvaluationMixin,
host.Engine)``) so that TF-CLIP and torchreid baselines are tested with the same sampling and protocol.
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import time
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from .. import host
from ..checkpoint import rng_state
from ..data.transforms import build_normaliser
from ..distributed import gather_shards, is_main_process, save_on_main_process, shard_loader, training_epoch
from ..evaluation import QUERY_IN_GALLERY, check_protocol, evaluate_distmat, protocol_gallery
from .features import PRECISIONS, bf16_weights, dense_tracklet_features, loader_features

TEST_SAMPLINGS = ("dense", "rrs")
FRAMES_PER_TRACKLET_RECORD = 4


def evenly_spaced_frames(tracklets: Sequence[tuple], count: int = FRAMES_PER_TRACKLET_RECORD) -> np.ndarray:
    """(N, count) str: ``count`` evenly spaced frame paths of each tracklet (repeated for short ones)."""
    rows = []
    for item in tracklets:
        paths = list(item[0])
        rows.append([paths[int(i)] for i in np.linspace(0, len(paths) - 1, count).round()])
    return np.asarray(rows, dtype=str).reshape(len(rows), count)


def save_test_outputs(path: str, protocol: str, query: Tuple, gallery: Tuple) -> str:
    """Write ``<save_dir>/test_outputs/<target>.npz`` (the report's input).

    ``query`` / ``gallery`` = (features (N, D) L2-normalised, pids (N,), camids (N,), tracklet tuples).
    """
    arrays = {"protocol": np.asarray(protocol)}
    for split, (features, pids, camids, tracklets) in (("query", query), ("gallery", gallery)):
        arrays[f"{split}_features"] = F.normalize(features.float(), dim=1).numpy().astype(np.float16)
        arrays[f"{split}_pids"] = np.asarray(pids, dtype=np.int64)
        arrays[f"{split}_camids"] = np.asarray(camids, dtype=np.int64)
        arrays[f"{split}_frames"] = evenly_spaced_frames(tracklets)
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


class ProtocolEvaluationMixin:
    """Replaces torchreid's ``Engine._evaluate``: tracklet features by ``tfclip.test_sampling``, ranking by
    ``tfclip.protocol``, torchreid's distance, re-ranking and visrank; results kept in ``test_results``.

    'dense': all frames in consecutive ``video.seq_len`` chunks (``DenseClipDataset`` over the test tuples,
    ``test.batch_size`` chunks per forward, ``data.workers``), chunk features averaged per tracklet.
    Both run under autocast at ``test_precision`` (``tfclip.test_precision``, else ``tfclip.precision``).
    'rrs': torchreid's query/gallery loaders, one clip per tracklet. Under torchrun every rank encodes a block
    of the tracklets and the features are gathered in dataset order; rank 0 alone writes test outputs and
    visrank. Subclasses define ``encode_clips``.

    Loaders ship uint8 clips; ``normaliser`` (``data.norm_mean`` / ``data.norm_std``) makes them normalised float32
    on the engine's device, for evaluation and, through :meth:`training_input`, for training steps. With
    ``tfclip.test_precision`` 'bf16' evaluation and phase 1 run a bfloat16 copy of the model
    (:meth:`evaluation_weights`).
    """

    cfg: CN

    def setup_evaluation(self, cfg: CN) -> None:
        check_protocol(cfg.tfclip.protocol)
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
    def test_sampling(self) -> str:
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

    def tracklet_features(self, name: str, split: str, loader) -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """(features (N, D), pids (N,), camids (N,)) of the query or gallery tracklets of target ``name``."""
        if self.test_sampling == "rrs":
            return gather_shards(lambda block: loader_features(
                self.encode_clips, shard_loader(loader, block), self.device, self.test_precision,
                desc=f"{name} {split}", normaliser=self.normaliser,
            ), len(loader.dataset))
        from ..data.video import DenseClipDataset

        query, gallery = self.datamanager.fetch_test_loaders(name)
        tracklets = query if split == "query" else gallery
        features = gather_shards(lambda block: dense_tracklet_features(
            self.encode_clips, DenseClipDataset([tracklets[i] for i in block], self.datamanager.transform_te,
                                                seq_len=self.cfg.video.seq_len),
            self.cfg.test.batch_size, self.cfg.data.workers, self.device, self.test_precision,
            desc=f"{name} {split} (dense)", normaliser=self.normaliser,
        ), len(tracklets))
        return features, np.array([t[1] for t in tracklets]), np.array([t[2] for t in tracklets])

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
        protocol, sampling = self.cfg.tfclip.protocol, self.test_sampling
        print(f"Extracting features ({sampling} sampling) ...")
        with self.evaluation_weights():
            qf, q_pids, q_camids = self.tracklet_features(dataset_name, "query", query_loader)
            gf, g_pids, g_camids = self.tracklet_features(dataset_name, "gallery", gallery_loader)
        print(f"Query {tuple(qf.shape)}, gallery {tuple(gf.shape)}")
        if normalize_feature:
            qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
        gallery, gallery_pids, gallery_camids = protocol_gallery(protocol, qf, gf, q_pids, g_pids, q_camids, g_camids)
        print(f"Computing distances ({dist_metric}) against {len(gallery_pids)} gallery tracklets "
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
            save_test_outputs(osp.join(save_dir, "test_outputs", f"{dataset_name}.npz"), protocol,
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


class CheckpointMixin:
    """Replaces torchreid's ``Engine.save_model``: atomic files, rank1 as float, config and RNG states
    inside; a ``model/checkpoint-latest.pth.tar`` after every epoch (resume, NaN reports); with
    ``tfclip.select_on_test`` the best R1+mAP checkpoint is kept as ``model-best.pth.tar``.
    ``train_seconds`` sums the wall time of the training epochs. Under torchrun rank 0 alone writes."""

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
        path = save_on_main_process(state, osp.join(save_dir, "model", f"model.pth.tar-{epoch + 1}"))
        print(f'Checkpoint saved to "{path}"')
        self.last_checkpoint = path
        if self.cfg.tfclip.select_on_test:
            score = state["rank1"] + state["mAP"]
            is_best = score > self.best_score
            if is_best:
                self.best_score, self.best_epoch = score, epoch + 1
                print(f"Test-set model selection: epoch {epoch + 1} is the best so far (R1+mAP {score:.4f})")
        if is_best:
            self.best_checkpoint = save_on_main_process(state, osp.join(save_dir, "model", "model-best.pth.tar"))

    def train(self, print_freq: int = 10, fixbase_epoch: int = 0, open_layers=None) -> None:
        started = time.time()
        with training_epoch(self.train_loader, self.model, self.epoch):
            super().train(print_freq=print_freq, fixbase_epoch=fixbase_epoch, open_layers=open_layers)
        self.train_seconds += time.time() - started
        save_dir = self.writer.get_logdir() if self.writer is not None else self.cfg.data.save_dir
        rank1 = float(self.last_result["cmc"][0]) if self.last_result else 0.0
        self.last_checkpoint = save_on_main_process(self.checkpoint_state(self.epoch, rank1),
                                                    osp.join(save_dir, "model", "checkpoint-latest.pth.tar"))
