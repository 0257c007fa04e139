"""torchrun jobs of 2 gloo processes that lose a worker or are stopped, on a small synthvid (3 epochs of 2
iterations; the faults come from ``tests/fault_injection.py`` at a fixed iteration):

- a worker SIGKILLed in epoch 2 ends the job promptly with a non-zero status and the epoch-1 checkpoint intact;
  the same command launched again (``model.resume auto``, what a requeued cluster job runs) finishes with the
  metrics and weights of the uninterrupted job, exactly;
- ``torchrun --max-restarts 1`` restarts the workers in place: they re-form the process group (a fresh store prefix
  per attempt), resume from the latest checkpoint (a restart implies ``auto``) and finish with the same metrics;
- SIGTERM to torchrun (what SLURM's preemption does) stops both ranks at the same iteration, with DataLoader
  workers running, and prints the command that resumes the job.

``timeout`` only detects hangs; every assertion is on outcomes (exit statuses, printed lines, files, metrics).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from engine_fixtures import tiny_config
from tfclip_plugin.files.checkpoint_file import load_checkpoint

FAULT_INJECTION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_injection.py")
HANG = 300  # seconds: a job still running after this is hung, not slow
KILL_IN_EPOCH_2 = {"FAULT": "kill", "FAULT_EPOCH": "2", "FAULT_ITERATION": "1", "FAULT_RANK": "1"}


def torchrun(config: str, *options: str, restarts: int = 0, **fault: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 [--max-restarts N] tests/fault_injection.py --config-file config
    options`` with the fault described by ``fault`` (none when empty); ``.ended`` is the time it exited."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **fault)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--max-restarts", str(restarts), FAULT_INJECTION, "--config-file", config, *options]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG)
    done.ended = time.time()
    return done


def seconds_after_the_fault(done: subprocess.CompletedProcess) -> float:
    """From the injected fault to the job's exit."""
    injected = float(re.search(r"fault injection: .* \(time ([\d.]+)\)", done.stderr).group(1))
    return done.ended - injected


def outcome(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n{done.stdout[-2500:]}\n{done.stderr[-5000:]}"


def metrics(save_dir: str) -> dict:
    with open(os.path.join(save_dir, "results.json")) as f:
        result = json.load(f)["results"]["synthvid"]
    return {key: result[key] for key in ("cmc", "mAP", "mINP")}


def final_weights(save_dir: str) -> dict:
    return load_checkpoint(os.path.join(save_dir, "model", "model.pth.tar-3"))["state_dict"]


def job_config(root: str, folder, name: str, *opts: str) -> tuple:
    """(config file, save_dir) of a 3-epoch tiny job named ``name``."""
    save_dir = str(folder / name)
    config = str(folder / f"{name}.yaml")
    with open(config, "w") as f:
        f.write(tiny_config(root, save_dir, "train.max_epoch", "3", "train.print_freq", "1", *opts).dump())
    return config, save_dir


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def uninterrupted(data_root, jobs):
    """The job without a fault: (metrics, final weights)."""
    config, save_dir = job_config(data_root, jobs, "uninterrupted")
    done = torchrun(config)
    assert done.returncode == 0, outcome(done)
    return metrics(save_dir), final_weights(save_dir)


def assert_reproduces(save_dir: str, uninterrupted) -> None:
    reference_metrics, reference_weights = uninterrupted
    assert metrics(save_dir) == reference_metrics
    weights = final_weights(save_dir)
    assert all(weights[name].equal(value) for name, value in reference_weights.items())


def test_a_killed_worker_ends_the_job_and_the_relaunched_job_reproduces_the_uninterrupted_one(data_root, jobs,
                                                                                              uninterrupted):
    config, save_dir = job_config(data_root, jobs, "killed")
    latest = os.path.join(save_dir, "model", "checkpoint-latest.pth.tar")
    killed = torchrun(config, "model.resume", "auto", **KILL_IN_EPOCH_2)
    assert killed.returncode not in (0, 124, 137), outcome(killed)
    assert "fault injection: kill at epoch 2, iteration 1" in killed.stderr
    assert seconds_after_the_fault(killed) < 20, outcome(killed)  # measured 1-2 s; torchrun's grace period is 30 s
    assert re.search(r"rank\s+: 1 \(local_rank: 1\)\n\s+exitcode\s+: -9", killed.stderr), outcome(killed)
    assert "forcefully" not in killed.stderr  # nobody had to be SIGKILLed by torchrun after its grace period
    assert load_checkpoint(latest)["epoch"] == 1 and "results.json" not in os.listdir(save_dir)

    relaunched = torchrun(config, "model.resume", "auto")
    assert relaunched.returncode == 0, outcome(relaunched)
    assert f"model.resume auto: resuming from {latest}" in relaunched.stdout
    assert f"Resumed from {latest}: continuing at epoch 2" in relaunched.stdout
    assert_reproduces(save_dir, uninterrupted)


def test_an_in_place_restart_re_forms_the_group_and_reproduces_the_uninterrupted_job(data_root, jobs, uninterrupted):
    config, save_dir = job_config(data_root, jobs, "restarted")
    done = torchrun(config, restarts=1, **KILL_IN_EPOCH_2)  # no model.resume: a restart implies auto
    assert done.returncode == 0, outcome(done)
    assert done.stderr.count("fault injection: kill at epoch 2, iteration 1 ") == 1
    latest = os.path.join(save_dir, "model", "checkpoint-latest.pth.tar")
    assert f"torchrun restart 1: resuming from {latest}" in done.stdout
    assert_reproduces(save_dir, uninterrupted)


def test_sigterm_to_torchrun_stops_every_rank_at_the_same_iteration(data_root, jobs):
    config, save_dir = job_config(data_root, jobs, "preempted", "data.workers", "1")
    done = torchrun(config, "model.resume", "auto", FAULT="term_launcher", FAULT_EPOCH="2", FAULT_ITERATION="1")
    assert done.returncode not in (0, 124, 137), outcome(done)
    assert seconds_after_the_fault(done) < 20, outcome(done)  # measured 3 s
    rank0 = re.findall(r"^=> (SIGTERM: training stopped in epoch (\d) after iteration (\d) of 2); (.*)$",
                       done.stdout, re.M)
    rank1 = re.findall(r"^tfclip-reid \(rank 1\): (.*)$", done.stderr, re.M)
    assert len(rank0) == 1 and rank1 == [rank0[0][0]], outcome(done)  # one agreed iteration
    epoch = int(rank0[0][1])
    latest = os.path.join(save_dir, "model", "checkpoint-latest.pth.tar")
    assert rank0[0][3] == f"{latest} holds epoch {epoch - 1}" and load_checkpoint(latest)["epoch"] == epoch - 1
    assert f"=> To resume: cd {os.getcwd()} && torchrun --standalone --nproc-per-node 2 -m tfclip_plugin " \
           f"--config-file {os.path.join(save_dir, 'config.yaml')} model.resume auto" in done.stdout
    assert "killed by signal" not in done.stderr and "forcefully" not in done.stderr  # loader workers ignored it
    with open(os.path.join(save_dir, "interrupted.json")) as f:
        assert json.load(f)["exit_code"] == 143
