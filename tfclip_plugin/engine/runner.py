"""One call per run: datamanager, model, optimizer, engine, ``Engine.run``, ``results.json``.

``run_experiment(cfg)`` is what ``tfclip-reid`` runs; ``run_all_splits`` loops iLIDS-VID / PRID2011 splits;
``run_demo`` is ``tfclip-reid demo`` (``make demo``). Under torchrun every process runs the same call
(``distributed.distribute_engine``); rank 0 alone prints, logs and writes results.
"""
from __future__ import annotations

import contextlib
import json
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from yacs.config import CfgNode as CN

from .. import distributed, host
from ..checkpoint import load_checkpoint, load_matching_weights, resume, state_dict_of
from ..config import activated_config, engine_run_kwargs
from .baselines import VideoSoftmaxBaselineEngine, VideoTripletBaselineEngine
from .engine import TFCLIPEngine
from .optim import build_optimizer, build_scheduler

RESULTS_FILE = "results.json"
NUM_SPLITS = 10
SELECTION_RULES = {
    False: "last epoch (the test set is not used for model selection)",
    True: "TEST-SET selection (tfclip.select_on_test): best R1+mAP of RRS-test evaluations during training, "
          "the reference's rule; not a clean protocol",
}


class _FileTee(host.Logger):
    """torchreid's ``Logger`` whose ``close`` closes only its file (torchreid's closes the console too)."""

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


@contextlib.contextmanager
def tee_stdout(path: str) -> Iterator[host.Logger]:
    """Copy stdout into ``path`` for the duration of the block (torchreid's ``Logger``)."""
    tee = _FileTee(path)
    sys.stdout = tee
    try:
        yield tee
    finally:
        sys.stdout = tee.console
        tee.close()


def is_tfclip(cfg: CN) -> bool:
    return cfg.model.name.startswith("tfclip_")


def build_model(cfg: CN, datamanager) -> torch.nn.Module:
    """torchreid's ``build_model`` with ``cfg`` active (``tfclip.num_cameras`` 0 -> the training cameras)."""
    cfg = cfg.clone()
    cfg.defrost()
    if cfg.tfclip.num_cameras == 0:
        cfg.tfclip.num_cameras = int(datamanager.num_train_cams)
    with activated_config(cfg):
        return host.models.build_model(name=cfg.model.name, num_classes=datamanager.num_train_pids,
                                       loss=cfg.loss.name, pretrained=cfg.model.pretrained, use_gpu=cfg.use_gpu)


def load_weights(model: torch.nn.Module, path: str, tfclip: bool) -> None:
    """``model.load_weights``. TF-CLIP: our checkpoints strictly (``models.load_tfclip_state_dict``), official
    TF-CLIP files (a bare state dict) through ``models.load_official_checkpoint``. torchreid models: the
    entries that match by name and shape (torchreid's rule)."""
    checkpoint = load_checkpoint(path)
    if tfclip:
        from ..models import load_official_checkpoint, load_tfclip_state_dict

        if "state_dict" in checkpoint:
            load_tfclip_state_dict(model, checkpoint)
            report = {"loaded": len(checkpoint["state_dict"])}
        else:
            report = load_official_checkpoint(model, checkpoint)
    else:
        report = load_matching_weights(model, state_dict_of(checkpoint))
        if not report["loaded"]:
            raise ValueError(f"{path}: no entry matches the model {type(model).__name__} by name and shape")
        report["loaded"] = len(report["loaded"])
    print(f"Loaded weights from {path}: {report}")


def build_engine(cfg: CN, datamanager, model, optimizer, scheduler):
    """TFCLIPEngine for ``tfclip_*`` models; torchreid's video engine chosen by ``loss.name`` otherwise."""
    if is_tfclip(cfg):
        return TFCLIPEngine(datamanager, model, optimizer, scheduler, cfg)
    engines = {"softmax": VideoSoftmaxBaselineEngine, "triplet": VideoTripletBaselineEngine}
    if cfg.loss.name not in engines:
        raise ValueError(f"loss.name must be 'softmax' or 'triplet' for torchreid models; got {cfg.loss.name!r}")
    return engines[cfg.loss.name](datamanager, model, optimizer, scheduler, cfg)


def build_optimization(cfg: CN, model):
    """(optimizer, scheduler): TF-CLIP's rules for ``tfclip_*``, torchreid's builders otherwise."""
    if is_tfclip(cfg):
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


def versions() -> Dict[str, str]:
    import open_clip

    from .. import __version__

    return {"torch": torch.__version__, "torchreid": host.torchreid_version(),
            "open_clip": open_clip.__version__, "tfclip_plugin": __version__}


def target_summary(result: Dict[str, Any], ranks: List[int]) -> Dict[str, Any]:
    """The JSON form of one target's metrics."""
    cmc = result["cmc"]
    return {
        "protocol": result["protocol"],
        "test_sampling": result["test_sampling"],
        "cmc": {str(r): float(cmc[r - 1]) for r in ranks if r <= len(cmc)},
        "mAP": result["mAP"],
        "mINP": result["mINP"],
        "num_query": result["num_query"],
        "num_gallery": result["num_gallery"],
        "num_valid_queries": result["num_valid_queries"],
        "epoch": result["epoch"],
        "rerank": result["rerank"],
    }


def write_results(save_dir: str, results: Dict[str, Any]) -> str:
    path = osp.join(save_dir, RESULTS_FILE)
    os.makedirs(save_dir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, path)
    return path


def run_experiment(cfg: CN) -> Dict[str, Any]:
    """Train and/or test as ``cfg`` says; ``tfclip.all_splits`` runs the 10 splits. Returns results.json's dict."""
    with distributed.process_group(cfg.use_gpu), distributed.quiet_unless_main():
        if cfg.tfclip.all_splits:
            return run_all_splits(cfg)
        return run_single(cfg)


def run_single(cfg: CN) -> Dict[str, Any]:
    """One train+test (or test-only) run in ``data.save_dir``: log file, checkpoints, results.json."""
    from ..data import build_datamanager

    started = time.time()
    save_dir = cfg.data.save_dir
    log_name = ("test.log" if cfg.test.evaluate else "train.log") + time.strftime("-%Y-%m-%d-%H-%M-%S")
    log = tee_stdout(osp.join(save_dir, log_name)) if distributed.is_main_process() else contextlib.nullcontext()
    with log:
        print(f"Show configuration\n{cfg}\n")
        print(f"Collecting env info ...\n** System info **\n{host.collect_env_info()}\n")
        host.set_random_seed(cfg.train.seed)
        with distributed.main_process_first():
            datamanager = build_datamanager(cfg)
            model = build_model(cfg, datamanager)
        if cfg.model.load_weights:
            load_weights(model, cfg.model.load_weights, is_tfclip(cfg))
        device = torch.device("cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu")
        model = model.to(device)
        optimizer, scheduler = build_optimization(cfg, model)
        engine = build_engine(cfg, datamanager, model, optimizer, scheduler)
        run_kwargs = engine_run_kwargs(cfg)
        if cfg.model.resume:
            run_kwargs["start_epoch"] = resume(cfg.model.resume, model, optimizer, scheduler, engine.scaler)
            print(f"Resumed from {cfg.model.resume}: continuing at epoch {run_kwargs['start_epoch'] + 1}")
        distributed.distribute_engine(engine, cfg, run_kwargs["start_epoch"])
        engine.run(**run_kwargs)
        results = {
            "model": cfg.model.name,
            "sources": list(cfg.data.sources),
            "targets": list(cfg.data.targets),
            "protocol": cfg.tfclip.protocol,
            "test_sampling": cfg.tfclip.test_sampling,
            "model_selection": SELECTION_RULES[bool(cfg.tfclip.select_on_test)] if not cfg.test.evaluate else
            f"test only ({cfg.model.load_weights or 'the weights the model was built with'})",
            "best_epoch": getattr(engine, "best_epoch", None),
            "epochs": cfg.train.max_epoch if not cfg.test.evaluate else 0,
            "checkpoint": engine.last_checkpoint,
            "results": {name: target_summary(r, list(cfg.test.ranks)) for name, r in engine.test_results.items()},
            "wall_seconds": {
                "phase1": round(getattr(engine, "phase1_seconds", 0.0), 2),
                "train": round(engine.train_seconds, 2),
                "test": round(engine.test_seconds, 2),
                "total": round(time.time() - started, 2),
            },
            "versions": versions(),
            "config": json.loads(json.dumps(cfg)),
        }
        if distributed.is_main_process():
            print(f"Results written to {write_results(save_dir, results)}")
    return results


def aggregate_splits(per_split: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean and sample standard deviation (ddof=1) over splits of every metric of every target."""
    summary = {}
    for target in per_split[0]["results"]:
        rows = [run["results"][target] for run in per_split]
        metrics = {"mAP": [r["mAP"] for r in rows], "mINP": [r["mINP"] for r in rows]}
        for rank in rows[0]["cmc"]:
            metrics[f"rank{rank}"] = [r["cmc"][rank] for r in rows]
        summary[target] = {
            name: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                   "per_split": [float(x) for x in v]}
            for name, v in metrics.items()
        }
    return summary


def run_all_splits(cfg: CN, num_splits: int = NUM_SPLITS) -> Dict[str, Any]:
    """Train and test each split 0..num_splits-1 into ``save_dir/split<i>``; results.json in ``save_dir``
    holds the per-split metrics and their mean and standard deviation (ddof=1)."""
    started = time.time()
    per_split = []
    for split_id in range(num_splits):
        split_cfg = cfg.clone()
        split_cfg.defrost()
        split_cfg.data.split_id = split_id
        split_cfg.tfclip.all_splits = False
        split_cfg.data.save_dir = osp.join(cfg.data.save_dir, f"split{split_id}")
        per_split.append(run_single(split_cfg))
    results = {
        "model": cfg.model.name,
        "sources": list(cfg.data.sources),
        "targets": list(cfg.data.targets),
        "protocol": cfg.tfclip.protocol,
        "test_sampling": cfg.tfclip.test_sampling,
        "model_selection": per_split[0]["model_selection"],
        "splits": num_splits,
        "std": "sample standard deviation over splits (ddof=1)",
        "summary": aggregate_splits(per_split),
        "split_dirs": [osp.join(cfg.data.save_dir, f"split{i}") for i in range(num_splits)],
        "wall_seconds": {"total": round(time.time() - started, 2)},
        "versions": versions(),
        "config": json.loads(json.dumps(cfg)),
    }
    for target, metrics in results["summary"].items():
        line = ", ".join(f"{k} {v['mean']:.1%} +- {v['std']:.1%}" for k, v in metrics.items())
        print(f"{target} over {num_splits} splits: {line}")
    if distributed.is_main_process():
        write_results(cfg.data.save_dir, results)
    return results


DEMO_YAML = """
model: {name: tfclip_vit, pretrained: false}
data:
  sources: [synthvid]
  targets: [synthvid]
  height: 64
  width: 32
  transforms: [random_flip, random_erase]
  workers: 0
sampler: {train_sampler: RandomIdentitySampler, num_instances: 4}
video: {seq_len: 8, sample_method: rrs}
train: {lr: 3.0e-4, weight_decay: 1.0e-4, max_epoch: 30, batch_size: 16, stepsize: [25], seed: 1234, print_freq: 5}
test: {batch_size: 64}
tfclip: {vision_width: 128, vision_layers: 4, embed_dim: 128, warmup_epochs: 2, precision: fp32}
"""
DEMO_BASELINE = {"model.name": "osnet_x0_25", "loss.name": "triplet"}


def demo_config(root: str = "reid-data", save_dir: str = "log/demo") -> CN:
    """The demo setting (``configs/demo.yaml`` holds the same values): synthvid, a small TF-CLIP ViT from
    random weights, both phases, on CPU."""
    from ..config import get_default_config

    cfg = get_default_config()
    cfg.merge_from_other_cfg(CN.load_cfg(DEMO_YAML))
    cfg.data.root, cfg.data.save_dir = root, save_dir
    return cfg


def _demo_variant(cfg: CN, save_dir: str, **options: Any) -> CN:
    variant = cfg.clone()
    variant.merge_from_list([item for pair in options.items() for item in pair])
    variant.data.save_dir = save_dir
    return variant


def run_demo(root: str = "reid-data", save_dir: str = "log/demo", threads: Optional[int] = None) -> Dict[str, Any]:
    """``tfclip-reid demo``: the untrained TF-CLIP, the trained one (phase 1 + phase 2) and a torchreid
    baseline trained by torchreid's video engine, all tested under the same protocol and sampling.

    ``threads``: torch intra-op threads during the demo; default ``OMP_NUM_THREADS`` when set, else 1. One
    thread is the robust choice for small models on a small CPU: on 2 cores shared with other work, two
    OpenMP threads waited on each other (a training step measured 6x slower), while on idle cores one
    thread costs about 1.3x.

    Prints a table and, as its last line, one JSON object (untrained_map, trained_map, baseline_map,
    baseline_model, seconds, ...). Returns that object.
    """
    started = time.time()
    cfg = demo_config(root, osp.join(save_dir, "tfclip"))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or int(os.environ.get("OMP_NUM_THREADS") or 1))
    try:
        runs = {
            "TF-CLIP, untrained": run_single(_demo_variant(cfg, osp.join(save_dir, "untrained"),
                                                           **{"test.evaluate": True})),
            "TF-CLIP, trained": run_single(cfg),
            f"{DEMO_BASELINE['model.name']} (torchreid video engine)": run_single(
                _demo_variant(cfg, osp.join(save_dir, "baseline"), **DEMO_BASELINE)),
        }
    finally:
        torch.set_num_threads(previous_threads)
    target = cfg.data.targets[0]
    print(f"\nsynthvid demo: protocol {cfg.tfclip.protocol}, {cfg.tfclip.test_sampling} test sampling")
    print(f"{'model':<40} {'mAP':>7} {'R1':>7} {'R5':>7} {'mINP':>7} {'seconds':>8}")
    for name, result in runs.items():
        metrics = result["results"][target]
        print(f"{name:<40} {metrics['mAP']:>7.1%} {metrics['cmc']['1']:>7.1%} {metrics['cmc']['5']:>7.1%} "
              f"{metrics['mINP']:>7.1%} {result['wall_seconds']['total']:>8.1f}")
    untrained, trained, baseline = (r["results"][target] for r in runs.values())
    summary = {
        "untrained_map": round(untrained["mAP"], 4),
        "trained_map": round(trained["mAP"], 4),
        "baseline_map": round(baseline["mAP"], 4),
        "untrained_rank1": round(untrained["cmc"]["1"], 4),
        "trained_rank1": round(trained["cmc"]["1"], 4),
        "baseline_rank1": round(baseline["cmc"]["1"], 4),
        "baseline_model": DEMO_BASELINE["model.name"],
        "protocol": cfg.tfclip.protocol,
        "test_sampling": cfg.tfclip.test_sampling,
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(summary))
    return summary
