"""Running: one call per run (datamanager, model, optimizer, engine, ``Engine.run``, ``results.json``).

``run_experiment(cfg)`` is what ``tfclip-reid`` runs; ``run_all_splits`` loops iLIDS-VID / PRID2011 splits.
The parts come from ``engine.build``; ``results.json`` is ``files.results``'s format. Under torchrun every
process runs the same call (the engine's ``prepare_distributed``); rank 0 alone prints, logs and writes.
"""
from __future__ import annotations

import contextlib
import json
import os.path as osp
import sys
import time
from typing import Any, Dict, Iterator

import torch
from yacs.config import CfgNode as CN

from .. import distributed, host
from ..config import engine_run_kwargs, warn_ineffective_keys
from ..files.checkpoint_file import resume
from ..files.results import aggregate_splits, target_summary, write_results
from .build import build_engine, build_model, build_optimization, load_weights
from .preflight import preflight, preflight_splits

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


def versions() -> Dict[str, str]:
    import open_clip

    from .. import __version__

    return {"torch": torch.__version__, "torchreid": host.torchreid_version(),
            "open_clip": open_clip.__version__, "tfclip_plugin": __version__}


def run_experiment(cfg: CN) -> Dict[str, Any]:
    """Train and/or test as ``cfg`` says; ``tfclip.all_splits`` runs the 10 splits. Returns results.json's dict."""
    with distributed.process_group(cfg.use_gpu), distributed.quiet_unless_main():
        if distributed.is_main_process():
            warn_ineffective_keys(cfg)
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
            load_weights(model, cfg.model.load_weights)
        device = torch.device("cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu")
        model = model.to(device)
        preflight(cfg, datamanager, model)
        optimizer, scheduler = build_optimization(cfg, model)
        engine = build_engine(cfg, datamanager, model, optimizer, scheduler)
        run_kwargs = engine_run_kwargs(cfg)
        if cfg.model.resume:
            run_kwargs["start_epoch"] = resume(cfg.model.resume, model, optimizer, scheduler, engine.scaler)
            print(f"Resumed from {cfg.model.resume}: continuing at epoch {run_kwargs['start_epoch'] + 1}")
        engine.prepare_distributed(run_kwargs["start_epoch"])
        engine.run(**run_kwargs)
        results = {
            "model": cfg.model.name,
            "sources": list(cfg.data.sources),
            "targets": list(cfg.data.targets),
            "data_type": cfg.data.type,
            "protocol": engine.protocol,
            "test_sampling": engine.test_sampling,
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
        if getattr(engine, "stage1_history", None):  # text mode: stage-1 losses and text/image accuracies
            results["stage1"] = engine.stage1_history
        if distributed.is_main_process():
            print(f"Results written to {write_results(save_dir, results)}")
    return results


def run_all_splits(cfg: CN, num_splits: int = NUM_SPLITS) -> Dict[str, Any]:
    """Train and test each split 0..num_splits-1 into ``save_dir/split<i>``; results.json in ``save_dir``
    holds the per-split metrics and their mean and standard deviation (ddof=1)."""
    started = time.time()
    preflight_splits(cfg, num_splits)
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
        "data_type": cfg.data.type,
        "protocol": per_split[0]["protocol"],
        "test_sampling": per_split[0]["test_sampling"],
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
