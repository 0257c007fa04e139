"""How a stopped or failed run continues: ``model.resume auto``, the run's ``config.yaml`` and the commands printed
for resuming and for testing.

- ``model.resume auto`` (and any training run that torchrun restarted in place) resumes from
  ``<data.save_dir>/model/checkpoint-latest.pth.tar`` when it exists and starts fresh when it does not, so the
  same command line serves the first start and every restart (:func:`checkpoint_to_resume`). A run whose
  checkpoint holds every epoch and whose ``results.json`` was written after it is finished
  (:func:`finished_run`): it is not trained again; without those results it is only tested.
- Every training run writes its config to ``<data.save_dir>/config.yaml`` (:func:`write_run_config`, with
  ``model.resume auto``), so that the printed commands are exact and self-contained:
  ``cd <cwd> && tfclip-reid --config-file <save_dir>/config.yaml model.resume auto`` (:func:`resume_command`).
  A stopped run also leaves ``<data.save_dir>/interrupted.json`` (both formats: ``files.run_records``).
"""
from __future__ import annotations

import os
import shlex
from typing import Dict, Optional, Tuple

from yacs.config import CfgNode as CN

from ..distributed import torchrun_restart_count
from ..files import run_records
from ..files.checkpoint_file import checkpoint_epoch, checkpoint_path
from ..files.results import load_results, results_path
from ..files.run_records import run_config_path

AUTO = "auto"


class EvaluationFailedError(RuntimeError):
    """The evaluation of a run that trained failed; its checkpoint keeps the training.

    Attributes: ``cause`` (the error), ``checkpoint`` (the trained model), ``epoch`` (1-based), ``save_dir``.
    The message names all of them and the command that evaluates the checkpoint (:func:`test_command`).
    """

    def __init__(self, cause: BaseException, checkpoint: str, epoch: int, save_dir: str) -> None:
        self.cause, self.checkpoint, self.epoch, self.save_dir = cause, checkpoint, epoch, save_dir
        super().__init__(
            f"the evaluation after epoch {epoch} failed: {type(cause).__name__}: {cause}\n"
            f"The trained model is kept in {checkpoint}. Once the data is fixed, evaluate it with:\n"
            f"  {test_command(save_dir, checkpoint)}")


def write_run_config(cfg: CN) -> str:
    """Write ``cfg`` with ``model.resume auto`` to ``<data.save_dir>/config.yaml`` (atomically); returns the path.
    ``tfclip-reid --config-file`` reads it back as this run's config."""
    stored = cfg.clone()
    stored.defrost()
    stored.model.resume = AUTO
    return run_records.write_run_config(cfg.data.save_dir, stored.dump())


def _launcher(environ: Optional[Dict[str, str]] = None) -> str:
    """``tfclip-reid``, or the torchrun line that starts as many processes as this job has."""
    environ = os.environ if environ is None else environ
    if int(environ.get("WORLD_SIZE", "1")) <= 1:
        return "tfclip-reid"
    per_node = environ.get("LOCAL_WORLD_SIZE", environ["WORLD_SIZE"])
    nodes = int(environ.get("GROUP_WORLD_SIZE", "1"))
    if nodes > 1:
        return (f"torchrun --nnodes {nodes} --nproc-per-node {per_node} <your rendezvous options, on every "
                "machine> -m tfclip_plugin")
    return f"torchrun --standalone --nproc-per-node {per_node} -m tfclip_plugin"


def command_line(launcher: str, config_file: str, *options: str) -> str:
    """``cd <cwd> && <launcher> --config-file <config_file> <options>`` (shell-quoted)."""
    words = " ".join(shlex.quote(word) for word in ("--config-file", config_file, *options))
    return f"cd {shlex.quote(os.getcwd())} && {launcher} {words}"


def resume_command(save_dir: str, environ: Optional[Dict[str, str]] = None) -> str:
    """The command that continues the training run of ``save_dir`` (its ``config.yaml`` with ``model.resume
    auto``, launched like this job); 'the same command with model.resume auto' when no config.yaml was written."""
    config_file = run_config_path(save_dir)
    if not os.path.isfile(config_file):
        return "the same command with `model.resume auto` added"
    return command_line(_launcher(environ), os.path.abspath(config_file), "model.resume", AUTO)


def test_command(save_dir: str, checkpoint: str) -> str:
    """The one-process command that evaluates ``checkpoint`` with the config of the run in ``save_dir``."""
    return command_line("tfclip-reid", os.path.abspath(run_config_path(save_dir)), "test.evaluate", "True",
                        "model.load_weights", os.path.abspath(checkpoint))


# ------------------------------------------------------------------------------------------------ resuming
def wants_latest_checkpoint(cfg: CN) -> bool:
    """True for a training run with ``model.resume auto`` or restarted in place by torchrun."""
    return not cfg.test.evaluate and (cfg.model.resume == AUTO or torchrun_restart_count() > 0)


def resume_rule(cfg: CN) -> str:
    """Why a training run looks for its latest checkpoint: 'model.resume auto' or 'torchrun restart <n>'."""
    return "model.resume auto" if cfg.model.resume == AUTO else f"torchrun restart {torchrun_restart_count()}"


def checkpoint_to_resume(cfg: CN) -> Tuple[str, str]:
    """(the checkpoint the run resumes from, '' for none; a line saying why, '' when nothing needs saying).

    ``model.resume auto`` in a training run: ``<data.save_dir>/model/checkpoint-latest.pth.tar`` if it exists,
    else none. A run restarted in place by torchrun (``TORCHELASTIC_RESTART_COUNT`` > 0) resumes from that file
    too whatever ``model.resume`` says (the attempt before it may have trained further), falling back to
    ``model.resume``. A test-only run ignores ``auto`` (it trains nothing).
    """
    requested = cfg.model.resume
    if not wants_latest_checkpoint(cfg):
        return ("" if requested == AUTO else requested), ""
    latest = checkpoint_path(cfg.data.save_dir, "latest")
    if os.path.isfile(latest):
        return latest, f"{resume_rule(cfg)}: resuming from {latest}"
    if requested and requested != AUTO:
        return requested, f"{resume_rule(cfg)}: no {latest}; resuming from model.resume {requested}"
    return "", f"{resume_rule(cfg)}: no {latest}; starting from the beginning"


def finished_run(save_dir: str, checkpoint: str, max_epoch: int) -> Tuple[bool, bool]:
    """(trained, tested) for a run resuming from ``checkpoint``: trained when the checkpoint holds at least
    ``max_epoch`` epochs; tested when, in addition, ``results.json`` of ``save_dir`` reports a run of ``max_epoch``
    epochs and was written after the checkpoint (a results file of an earlier run in the same folder, or of a
    test-only run, does not count)."""
    epochs = checkpoint_epoch(checkpoint)
    if epochs < max_epoch:
        return False, False
    results_file = results_path(save_dir)
    if not os.path.isfile(results_file):
        return True, False
    try:
        results = load_results(save_dir)
    except ValueError:
        return True, False
    newer = os.stat(results_file).st_mtime_ns >= os.stat(checkpoint).st_mtime_ns
    return True, newer and results.get("epochs") == max_epoch and bool(results.get("results") or results.get("summary"))


# ------------------------------------------------------------------------------------------------ stopping
def latest_checkpoint(save_dir: str) -> Tuple[Optional[str], Optional[int], str]:
    """(``<save_dir>/model/checkpoint-latest.pth.tar`` or None when absent, the epochs it holds or None when
    unreadable, a clause saying so for messages). Never raises: it serves the reports of stops and failures."""
    latest = checkpoint_path(save_dir, "latest")
    if not os.path.isfile(latest):
        return None, None, "no epoch had finished (no checkpoint yet)"
    try:
        epoch = checkpoint_epoch(latest)
    except Exception:  # a report must not fail because of what it reports on
        return latest, None, f"the latest checkpoint is {latest}"
    return latest, epoch, f"{latest} holds epoch {epoch}"
