"""Stop requests: SIGTERM and SIGINT end a run at the next safe point instead of killing it mid-step.

A cluster preempts a job with SIGTERM (SLURM sends SIGKILL after its grace period), torchrun forwards the
signals it receives to every worker, and Ctrl-C sends SIGINT. While :class:`StopSignals` is active
(``engine.runner.run_experiment`` holds it around a run, in the main thread only) the first such signal is only
recorded; the handler does nothing else, so a checkpoint being written when it arrives is completed. The run
asks at its safe points:

- the training loop before every batch, i.e. after the previous iteration's optimizer step
  (``engine.mixins.CheckpointMixin``): under torchrun the ranks agree with one all-reduce of the recorded signal
  (``distributed.max_over_ranks``), so every rank stops at the same iteration;
- phase 1, stage 1 and the evaluation between batches (:func:`raise_if_stop_requested`, local: the processes do
  different work there, and a process that stops makes torchrun stop the others).

The run then raises :class:`TrainingStopped`, whose ``exit_code`` is 128 + the signal (143 for SIGTERM, 130
for SIGINT). Nothing on the way out calls a collective. A second SIGINT aborts at once (``KeyboardInterrupt``);
a repeated SIGTERM (SLURM signals every process, torchrun forwards the same signal again) changes nothing.
DataLoader worker processes ignore both signals (:func:`ignore_stop_signals_in_worker`, their
``worker_init_fn``), so that the main process, not a dead worker, decides when the run ends.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Dict, Iterator, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PHASES = ("run", "setup", "phase 1", "stage 1", "training", "evaluation")  # "run": somewhere not known

_requested = 0  # the first stop signal received while StopSignals is active (0: none)
_active = 0  # how many StopSignals blocks are open (they nest: only the outermost installs handlers)


def exit_code(signum: int) -> int:
    """The exit status of a run stopped by ``signum``: 128 + signum, as a shell reports a process killed by it."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    """'SIGTERM', 'SIGINT', ... (``str(signum)`` for a number that is no signal)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


class TrainingStopped(BaseException):
    """A run that stopped on request (SIGTERM, SIGINT) at a safe point.

    A ``BaseException`` like ``KeyboardInterrupt``: handlers for errors (``except Exception``) let it through.

    Attributes:
        signum: the signal; ``exit_code`` is 128 + signum.
        phase: one of :data:`PHASES`, where the run was.
        epoch: the (1-based) epoch being trained or just evaluated; None before the first epoch.
        iteration, iterations: in 'training', the iterations of ``epoch`` completed and its length.
        checkpoint, checkpoint_epoch: the run's latest checkpoint and the epochs it holds (set by the runner;
            None when no epoch has finished).
        resume_command: the command that continues the run (set by the runner).
    """

    def __init__(self, signum: int, phase: str, epoch: Optional[int] = None, iteration: Optional[int] = None,
                 iterations: Optional[int] = None, cause: Optional[BaseException] = None) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}; got {phase!r}")
        self.signum, self.phase, self.epoch = int(signum), phase, epoch
        self.iteration, self.iterations, self.cause = iteration, iterations, cause
        self.checkpoint: Optional[str] = None
        self.checkpoint_epoch: Optional[int] = None
        self.resume_command: Optional[str] = None
        super().__init__(self.describe())

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)

    def describe(self) -> str:
        """One line: the signal and where the run stopped."""
        name = signal_name(self.signum)
        if self.phase == "training" and self.epoch is not None:
            if self.iteration:
                where = f"training stopped in epoch {self.epoch} after iteration {self.iteration} of {self.iterations}"
            else:
                where = f"training stopped before epoch {self.epoch}"
        elif self.phase == "evaluation" and self.epoch is not None:
            where = f"stopped during the evaluation after epoch {self.epoch}"
        elif self.phase == "run":
            where = "stopped"
        else:
            where = f"stopped during {self.phase}"
        if self.cause is not None:
            where += f" (another process stopped first: {type(self.cause).__name__}: {self.cause})"
        return f"{name}: {where}"

    def __str__(self) -> str:
        return self.describe()


def requested_signal() -> int:
    """The stop signal received so far (0: none)."""
    return _requested


def raise_if_stop_requested(phase: str, epoch: Optional[int] = None) -> None:
    """Raise :class:`TrainingStopped` if a stop signal was received (a local check, no collective)."""
    if _requested:
        raise TrainingStopped(_requested, phase, epoch=epoch)


def _on_stop_signal(signum: int, frame: Any) -> None:
    """Record the first signal; a SIGINT after it aborts at once. Only sets a number, so it is safe wherever the
    main thread is (inside a collective, a file write, a C++ call)."""
    global _requested
    if _requested and signum == signal.SIGINT:
        raise KeyboardInterrupt
    _requested = _requested or signum


class StopSignals:
    """Record SIGTERM and SIGINT for the block instead of dying on them; restore the previous handlers after it.

    Handlers can only be installed from the main thread: elsewhere the block changes nothing (the signals keep
    their handlers and nothing is recorded). Blocks nest; the outermost installs and restores. The recorded signal
    is cleared on entry and exit.
    """

    def __init__(self) -> None:
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        global _active, _requested
        if threading.current_thread() is not threading.main_thread():
            return self
        if _active == 0:
            _requested = 0
            self._previous = {sig: signal.signal(sig, _on_stop_signal) for sig in STOP_SIGNALS}
        _active += 1
        return self

    def __exit__(self, *exc_info: Any) -> None:
        global _active, _requested
        if threading.current_thread() is not threading.main_thread():
            return
        _active -= 1
        if self._previous:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous = {}
            _requested = 0


@contextlib.contextmanager
def errors_after_a_stop_are_the_stop(phase: str = "run") -> Iterator[None]:
    """Inside the block, an error raised once a stop signal has been received (typically a collective that fails
    because another process stopped first) is reported as the stop: :class:`TrainingStopped` with the error as its
    ``cause``."""
    try:
        yield
    except Exception as exc:
        if _requested:
            raise TrainingStopped(_requested, phase, cause=exc) from exc
        raise


def ignore_stop_signals_in_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader of the plugin: the worker process ignores SIGTERM and SIGINT (torch's
    worker would die on SIGTERM, and the main process would fail with 'DataLoader worker ... killed by signal'); it
    ends with its iterator when the main process stops."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
