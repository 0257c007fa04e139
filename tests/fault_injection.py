"""Test-only entry point: ``tfclip-reid`` (``cli.main``) with a fault injected at a fixed training iteration.

    python tests/fault_injection.py <tfclip-reid arguments>             (alone or as torchrun's script)

The environment says which fault, where and when; without ``FAULT`` this is plain ``tfclip-reid``:

- ``FAULT``: ``term_self`` (SIGTERM to this process), ``term_launcher`` (SIGTERM to the parent: under torchrun
  the agent, which forwards it to every worker, as SLURM's preemption does) or ``kill`` (SIGKILL to this process);
- ``FAULT_EPOCH`` (1-based) and ``FAULT_ITERATION`` (1-based): the iteration at whose start it happens;
- ``FAULT_RANK`` (default 0): the rank that injects it; ``FAULT_ATTEMPT`` (default 0): only in this torchrun attempt
  (``TORCHELASTIC_RESTART_COUNT``), so that a restarted job runs clean.

The fault's line on stderr carries the wall-clock time (``time.time()``) at which it is injected. The fault is
injected from inside the run (``TFCLIPEngine.forward_backward`` is wrapped), so it lands at the same
iteration on every machine, however loaded.
"""
import os
import signal
import sys
import time

from tfclip_plugin.cli import main
from tfclip_plugin.engine.engine import TFCLIPEngine

FAULTS = {
    "term_self": lambda: os.kill(os.getpid(), signal.SIGTERM),
    "term_launcher": lambda: os.kill(os.getppid(), signal.SIGTERM),
    "kill": lambda: os.kill(os.getpid(), signal.SIGKILL),
}


def inject_fault() -> None:
    fault = FAULTS[os.environ["FAULT"]]
    where = (int(os.environ["FAULT_EPOCH"]), int(os.environ["FAULT_ITERATION"]))
    rank, attempt = int(os.environ.get("FAULT_RANK", "0")), int(os.environ.get("FAULT_ATTEMPT", "0"))
    forward_backward = TFCLIPEngine.forward_backward

    def forward_backward_with_fault(engine, data):
        if ((engine.epoch + 1, engine.batch_idx + 1) == where and int(os.environ.get("RANK", "0")) == rank
                and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == attempt):
            print(f"fault injection: {os.environ['FAULT']} at epoch {where[0]}, iteration {where[1]} "
                  f"(time {time.time():.3f})", file=sys.stderr, flush=True)
            fault()
        return forward_backward(engine, data)

    TFCLIPEngine.forward_backward = forward_backward_with_fault


if __name__ == "__main__":
    if os.environ.get("FAULT"):
        inject_fault()
    sys.exit(main(sys.argv[1:]))
