"""Running: one call per run (datamanager, model, optimizer, engine, ``Engine.run``, ``results.json``).

``run_experiment(cfg)`` is what ``tfclip-reid`` runs; ``run_all_splits`` loops iLIDS-VID / PRID2011 splits.
The parts come from ``engine.build``; ``results.json`` is ``files.results``'s format. Under torchrun every
process runs the same call (the engine's ``prepare_distributed``); rank 0 alone prints, logs and writes.

``run_experiment`` records SIGTERM / SIGINT for its duration (``stopping.StopSignals``; the previous handlers
are restored afterwards): the run stops at the next safe point with ``stopping.TrainingStopped``, after printing
the command that resumes it. ``model.resume auto``, the run's ``config.yaml`` and the printed commands are
``engine.recovery``'s.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os.path as osp
import sys
import time
from typing import Any, Dict, Iterator

import torch
from yacs.config import CfgNode as CN

from .. import distributed, host
from ..config import engine_run_kwargs, warn_ineffective_keys
from ..files.atomic import WriteFailedError
from ..files.checkpoint_file import resume
from ..files.results import aggregate_splits, load_results, results_path, target_summary, write_results
from ..files.run_records import remove_interrupted, write_interrupted
from ..stopping import StopSignals, TrainingStopped, errors_after_a_stop_are_the_stop, requested_signal, signal_name
from .build import build_engine, build_model, build_optimization, load_weights
from .preflight import preflight, preflight_splits
from .recovery import (
    checkpoint_to_resume, finished_run, latest_checkpoint, resume_command, resume_rule, wants_latest_checkpoint,
    write_run_config,
)

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
    """Train and/or test as ``cfg`` says; ``tfclip.all_splits`` runs the 10 splits. Returns results.json's dict.

    Raises ``stopping.TrainingStopped`` when SIGTERM or SIGINT stopped the run (its ``resume_command`` continues
    it; ``<data.save_dir>/interrupted.json`` says the same), ``WriteFailedError`` when a checkpoint or results
    file could not be written (the message ends with the resume command), and
    ``recovery.EvaluationFailedError`` when the evaluation after training failed (the message gives the
    command that evaluates the kept checkpoint).
    """
    timeout = datetime.timedelta(minutes=float(cfg.tfclip.dist_timeout))
    with StopSignals(), distributed.process_group(cfg.use_gpu, timeout), distributed.quiet_unless_main():
        if distributed.is_main_process():
            warn_ineffective_keys(cfg)
        try:
            results = run_all_splits(cfg) if cfg.tfclip.all_splits else run_single(cfg)
        except TrainingStopped as stopped:
            report_stop(cfg, stopped)
            raise
        except WriteFailedError as exc:
            if cfg.test.evaluate:
                raise
            kept = "model/checkpoint-latest.pth.tar of each split holds its last complete epoch" \
                if cfg.tfclip.all_splits else latest_checkpoint(cfg.data.save_dir)[2]
            raise WriteFailedError(exc.errno, f"{exc}\nEvery file written before is intact ({kept}). Once there is "
                                   f"room, resume with:\n  {resume_command(cfg.data.save_dir)}") from exc
        if distributed.is_main_process() and not cfg.test.evaluate:
            remove_interrupted(cfg.data.save_dir)
        return results


def report_stop(cfg: CN, stopped: TrainingStopped) -> None:
    """Set ``stopped.resume_command``; on rank 0 print it and write ``<data.save_dir>/interrupted.json`` (a failed
    write of that file is ignored: the stop is what must be reported)."""
    training = not cfg.test.evaluate
    stopped.resume_command = resume_command(cfg.data.save_dir) if training else None
    if not distributed.is_main_process():
        return
    print(f"=> To resume: {stopped.resume_command}" if training else "=> Run the same command again to test.")
    record = {"signal": signal_name(stopped.signum), "exit_code": stopped.exit_code, "phase": stopped.phase,
              "epoch": stopped.epoch, "iteration": stopped.iteration, "iterations": stopped.iterations,
              "checkpoint": stopped.checkpoint, "checkpoint_epoch": stopped.checkpoint_epoch,
              "resume_command": stopped.resume_command, "message": str(stopped)}
    with contextlib.suppress(OSError):
        write_interrupted(cfg.data.save_dir, record)


def run_single(cfg: CN) -> Dict[str, Any]:
    """One train+test (or test-only) run in ``data.save_dir``: ``config.yaml``, log file, checkpoints, results.json.

    With ``model.resume auto`` (or after a torchrun restart) a finished run is not trained again (its results are
    returned) and a trained but untested one is only tested (``engine.recovery``).
    """
    started = time.time()
    save_dir = cfg.data.save_dir
    resume_from, why = distributed.main_process_value(lambda: checkpoint_to_resume(cfg))
    if resume_from and wants_latest_checkpoint(cfg):
        trained, tested = distributed.main_process_value(
            lambda: finished_run(save_dir, resume_from, cfg.train.max_epoch))
        if tested:
            print(f"{resume_rule(cfg)}: the run in {save_dir} is finished ({resume_from} holds all "
                  f"{cfg.train.max_epoch} epochs, {results_path(save_dir)} was written after it); not training again")
            return load_results(save_dir)
        if trained:
            why += f" (all {cfg.train.max_epoch} epochs are trained but not tested: testing only)"
    if not cfg.test.evaluate and distributed.is_main_process():
        write_run_config(cfg)
    log_name = ("test.log" if cfg.test.evaluate else "train.log") + time.strftime("-%Y-%m-%d-%H-%M-%S")
    log = tee_stdout(osp.join(save_dir, log_name)) if distributed.is_main_process() else contextlib.nullcontext()
    with log:
        try:
            with errors_after_a_stop_are_the_stop():
                return _train_and_test(cfg, resume_from, why, started)
        except TrainingStopped as stopped:
            stopped.checkpoint, stopped.checkpoint_epoch, kept = latest_checkpoint(save_dir)
            print(f"=> {stopped}; {kept}")
            raise


def _train_and_test(cfg: CN, resume_from: str, why: str, started: float) -> Dict[str, Any]:
    """The body of :func:`run_single` (inside its log): build, resume from ``resume_from`` ('' for none), train,
    test, write results.json."""
    from ..data import build_datamanager

    save_dir = cfg.data.save_dir
    print(f"Show configuration\n{cfg}\n")
    print(f"Collecting env info ...\n** System info **\n{host.collect_env_info()}\n")
    if why:
        print(why)
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
    if resume_from:
        run_kwargs["start_epoch"] = resume(resume_from, model, optimizer, scheduler, engine.scaler)
        engine.last_checkpoint = resume_from
        done = run_kwargs["start_epoch"]
        engine.restore_selection(save_dir, done)
        print(f"Resumed from {resume_from}: " + (f"continuing at epoch {done + 1}" if done < cfg.train.max_epoch else
                                                  f"{done} epochs trained, testing"))
    engine.prepare_distributed()
    signum = distributed.max_over_ranks(requested_signal())  # stopped while the run was being built
    if signum:
        raise TrainingStopped(signum, "setup")
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
    if not cfg.test.evaluate and distributed.is_main_process():
        write_run_config(cfg)
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
