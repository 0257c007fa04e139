"""The pure parts of stopping and recovering, without torchrun: stop signals (handler, idempotence, restoring the
previous handlers), exit statuses, where a stop lands in the training loop, the DataLoader workers' signals, the
process-group store chosen from torchrun's environment, per-epoch seeds and ``model.resume auto``'s decisions."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
from torch.utils.data import Dataset

from engine_fixtures import tiny_config
from tfclip_plugin import cli, distributed, stopping
from tfclip_plugin.engine import recovery, runner
from tfclip_plugin.engine.mixins import IterationsUntilStopped
from tfclip_plugin.files import run_records
from tfclip_plugin.files.atomic import WriteFailedError
from tfclip_plugin.files.checkpoint_file import checkpoint_path, save_checkpoint
from tfclip_plugin.files.results import write_results
from tfclip_plugin.stopping import StopSignals, TrainingStopped


def deliver(signum: int) -> None:
    """Send ``signum`` to this process and let the main thread run its Python handler."""
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # the handler runs at the next bytecode boundary of the main thread


def test_exit_statuses_are_128_plus_the_signal_and_the_table_lists_them():
    assert stopping.exit_code(signal.SIGTERM) == 143 and stopping.exit_code(signal.SIGINT) == 130
    assert TrainingStopped(signal.SIGTERM, "training", epoch=2, iteration=1, iterations=5).exit_code == 143
    assert [status for status, _ in cli.EXIT_STATUSES] == ["0", "1", "2", "128 + N"]
    assert (cli.EXIT_DONE, cli.EXIT_FAILED, cli.EXIT_CONFIG_ERROR) == (0, 1, 2)


def test_a_stop_says_where_it_happened():
    term, intr = signal.SIGTERM, signal.SIGINT
    assert str(TrainingStopped(term, "training", epoch=2, iteration=1, iterations=5)) == \
        "SIGTERM: training stopped in epoch 2 after iteration 1 of 5"
    assert str(TrainingStopped(intr, "training", epoch=3, iteration=0, iterations=5)) == \
        "SIGINT: training stopped before epoch 3"
    assert str(TrainingStopped(term, "evaluation", epoch=4)) == "SIGTERM: stopped during the evaluation after epoch 4"
    assert str(TrainingStopped(term, "phase 1")) == "SIGTERM: stopped during phase 1"
    assert str(TrainingStopped(term, "run", cause=RuntimeError("Connection closed by peer"))) == \
        "SIGTERM: stopped (another process stopped first: RuntimeError: Connection closed by peer)"
    with pytest.raises(ValueError, match="phase must be one of run, setup, phase 1, stage 1, training, evaluation"):
        TrainingStopped(term, "lunch")
    assert not isinstance(TrainingStopped(term, "run"), Exception)  # `except Exception` lets it through


def test_handlers_record_the_first_signal_and_are_restored_afterwards():
    before = {sig: signal.getsignal(sig) for sig in stopping.STOP_SIGNALS}
    with StopSignals():
        assert all(signal.getsignal(sig) is not before[sig] for sig in stopping.STOP_SIGNALS)
        assert stopping.requested_signal() == 0
        deliver(signal.SIGTERM)
        deliver(signal.SIGTERM)  # SLURM signals every process and torchrun forwards the same signal again
        assert stopping.requested_signal() == signal.SIGTERM
        with StopSignals():  # nested blocks leave the outer handlers and the recorded signal alone
            assert stopping.requested_signal() == signal.SIGTERM
        assert stopping.requested_signal() == signal.SIGTERM
        with pytest.raises(TrainingStopped, match="SIGTERM: stopped during stage 1"):
            stopping.raise_if_stop_requested("stage 1")
    assert {sig: signal.getsignal(sig) for sig in stopping.STOP_SIGNALS} == before
    assert stopping.requested_signal() == 0
    stopping.raise_if_stop_requested("phase 1")  # nothing recorded outside the block


def test_a_second_sigint_aborts_at_once():
    with StopSignals():
        deliver(signal.SIGINT)
        assert stopping.requested_signal() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            deliver(signal.SIGINT)


def test_outside_the_main_thread_nothing_is_installed():
    seen = {}

    def body():
        with StopSignals():
            seen["handler"] = signal.getsignal(signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen["handler"] is before and signal.getsignal(signal.SIGTERM) is before


def test_errors_after_a_stop_request_are_reported_as_the_stop():
    with StopSignals():
        with pytest.raises(ValueError, match="unrelated"):
            with stopping.errors_after_a_stop_are_the_stop():
                raise ValueError("unrelated")
        deliver(signal.SIGTERM)
        with pytest.raises(TrainingStopped) as stopped:
            with stopping.errors_after_a_stop_are_the_stop():
                raise RuntimeError("Connection reset by peer")
    assert stopped.value.signum == signal.SIGTERM and isinstance(stopped.value.cause, RuntimeError)


def test_training_stops_between_iterations_and_a_signal_in_the_last_iteration_lets_the_epoch_finish():
    def run_epoch(signal_at: int) -> list:
        done = []
        for data in IterationsUntilStopped(range(4), epoch=1):
            done.append(data)
            if data == signal_at:
                deliver(signal.SIGTERM)
        return done

    with StopSignals():
        with pytest.raises(TrainingStopped) as stopped:
            run_epoch(signal_at=1)
    assert (stopped.value.phase, stopped.value.epoch, stopped.value.iteration, stopped.value.iterations) == \
        ("training", 2, 2, 4)
    assert len(IterationsUntilStopped(range(4), epoch=0)) == 4
    with StopSignals():
        assert run_epoch(signal_at=3) == [0, 1, 2, 3]  # the epoch ends normally: its checkpoint is written
        with pytest.raises(TrainingStopped, match="training stopped before epoch 2"):
            run_epoch(signal_at=-1)  # ... and the next epoch stops before its first step


class SignalDispositions(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict:
        return {"pid": os.getpid(), "ignored": int(all(signal.getsignal(sig) == signal.SIG_IGN
                                                       for sig in stopping.STOP_SIGNALS))}


def test_dataloader_workers_ignore_stop_signals(data_root, tmp_path):
    loader = torch.utils.data.DataLoader(SignalDispositions(), batch_size=1, num_workers=1)
    sharded = distributed.shard_loader(loader, range(1))
    batch = next(iter(sharded))
    assert int(batch["pid"][0]) != os.getpid() and int(batch["ignored"][0]) == 1
    from tfclip_plugin.data import build_datamanager

    datamanager = build_datamanager(tiny_config(data_root, str(tmp_path)))
    loaders = [datamanager.train_loader] + [split for target in datamanager.test_loader.values()
                                            for split in target.values()]
    assert all(loader.worker_init_fn is stopping.ignore_stop_signals_in_worker for loader in loaders)


def test_the_process_group_store_is_chosen_from_torchruns_environment():
    assert distributed.attempt_store_prefix({}) is None  # not under torchrun: torch's env:// set-up
    assert distributed.attempt_store_prefix({"TORCHELASTIC_USE_AGENT_STORE": "False",
                                             "TORCHELASTIC_RESTART_COUNT": "1"}) is None
    shared = {"TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "0"}
    assert distributed.attempt_store_prefix(shared) == "tfclip_plugin/attempt0"
    assert distributed.attempt_store_prefix(dict(shared, TORCHELASTIC_RESTART_COUNT="3")) == "tfclip_plugin/attempt3"
    assert distributed.multi_node_restart_warning(dict(shared, GROUP_WORLD_SIZE="1",
                                                       TORCHELASTIC_MAX_RESTARTS="3")) is None
    assert distributed.multi_node_restart_warning(dict(shared, GROUP_WORLD_SIZE="2",
                                                       TORCHELASTIC_MAX_RESTARTS="0")) is None
    assert distributed.multi_node_restart_warning(dict(shared, GROUP_WORLD_SIZE="2", TORCHELASTIC_MAX_RESTARTS="3",
                                                       TORCHELASTIC_USE_AGENT_STORE="False")) is None
    warning = distributed.multi_node_restart_warning(dict(shared, GROUP_WORLD_SIZE="2", TORCHELASTIC_MAX_RESTARTS="3"))
    assert warning.startswith("torchrun --max-restarts over several machines: with --rdzv-backend c10d export "
                              "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1")


def test_epoch_seeds_differ_per_rank_and_epoch_and_do_not_depend_on_the_start():
    seeds = {(r, e): distributed.epoch_seed(1234, e, r, 4) for r in range(4) for e in range(50)}
    assert len(set(seeds.values())) == len(seeds) and seeds[(1, 2)] == 1234 + 1 + 4 * 2


def test_the_cli_maps_outcomes_to_exit_statuses(monkeypatch, capsys, tmp_path):
    cfg = tiny_config(str(tmp_path), str(tmp_path / "run"))
    outcomes = {
        "stopped": TrainingStopped(signal.SIGTERM, "training", epoch=2, iteration=1, iterations=4),
        "write": WriteFailedError(27, "cannot write x: file size limit exceeded"),
        "evaluation": recovery.EvaluationFailedError(OSError("cannot read frame f.jpg"), "ckpt", 3, str(tmp_path)),
    }

    def run_experiment(config):
        raise outcomes[config.data.save_dir]

    monkeypatch.setattr(runner, "run_experiment", run_experiment)
    codes = {}
    for name in outcomes:
        cfg.data.save_dir = name
        codes[name] = cli.train_or_test(cfg)
    assert codes == {"stopped": 143, "write": 1, "evaluation": 1}
    err = capsys.readouterr().err
    assert "tfclip-reid: error: cannot write x: file size limit exceeded\n" in err
    assert "tfclip-reid: error: the evaluation after epoch 3 failed: OSError: cannot read frame f.jpg\n" in err
    assert "SIGTERM" not in err  # rank 0 printed the stop and the resume command already
    monkeypatch.setenv("RANK", "1")
    cfg.data.save_dir = "stopped"
    assert cli.train_or_test(cfg) == 143
    assert capsys.readouterr().err == \
        "tfclip-reid (rank 1): SIGTERM: training stopped in epoch 2 after iteration 1 of 4\n"


def test_commands_are_exact_and_launch_like_the_job(tmp_path, monkeypatch):
    save_dir = str(tmp_path / "run dir")
    assert recovery.resume_command(save_dir, {}) == "the same command with `model.resume auto` added"
    recovery.write_run_config(tiny_config(str(tmp_path), save_dir, "model.resume", "/old/checkpoint.pth.tar"))
    config = os.path.join(save_dir, "config.yaml")
    cwd = os.getcwd()
    assert recovery.resume_command(save_dir, {}) == \
        f"cd {cwd} && tfclip-reid --config-file '{config}' model.resume auto"
    assert recovery.resume_command(save_dir, {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"}) == (
        f"cd {cwd} && torchrun --standalone --nproc-per-node 8 -m tfclip_plugin --config-file '{config}' "
        "model.resume auto")
    several_machines = {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "GROUP_WORLD_SIZE": "2"}
    assert recovery.resume_command(save_dir, several_machines).startswith(
        f"cd {cwd} && torchrun --nnodes 2 --nproc-per-node 4 <your rendezvous options, on every machine> -m")
    assert recovery.test_command(save_dir, "ckpt.pth.tar") == (
        f"cd {cwd} && tfclip-reid --config-file '{config}' test.evaluate True model.load_weights "
        f"{os.path.join(cwd, 'ckpt.pth.tar')}")
    stored = cli.config_from_args(["--config-file", config])  # config.yaml reads back as the run's config
    assert stored.data.save_dir == save_dir and stored.model.resume == "auto" and stored.train.max_epoch == 2


def test_model_resume_auto_and_torchrun_restarts_pick_the_latest_checkpoint(tmp_path, monkeypatch):
    save_dir = str(tmp_path)
    latest = checkpoint_path(save_dir, "latest")
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert recovery.checkpoint_to_resume(tiny_config(save_dir, save_dir, "model.resume", "auto")) == \
        ("", f"model.resume auto: no {latest}; starting from the beginning")
    assert recovery.checkpoint_to_resume(tiny_config(save_dir, save_dir)) == ("", "")
    save_checkpoint({"state_dict": {}, "epoch": 1}, latest)
    assert recovery.checkpoint_to_resume(tiny_config(save_dir, save_dir, "model.resume", "auto")) == \
        (latest, f"model.resume auto: resuming from {latest}")
    assert recovery.checkpoint_to_resume(tiny_config(save_dir, save_dir)) == ("", "")  # a fresh run stays fresh
    assert recovery.checkpoint_to_resume(tiny_config(save_dir, save_dir, "model.resume", "auto", "test.evaluate",
                                                     "True")) == ("", "")  # testing resumes nothing
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert recovery.checkpoint_to_resume(tiny_config(save_dir, save_dir)) == \
        (latest, f"torchrun restart 1: resuming from {latest}")
    assert recovery.checkpoint_to_resume(tiny_config(save_dir, save_dir, "model.resume", "/elsewhere.pth.tar"))[0] \
        == latest
    os.remove(latest)
    assert recovery.checkpoint_to_resume(tiny_config(save_dir, save_dir, "model.resume", "/elsewhere.pth.tar")) == \
        ("/elsewhere.pth.tar", f"torchrun restart 1: no {latest}; resuming from model.resume /elsewhere.pth.tar")


def test_a_run_is_finished_when_its_results_were_written_after_its_last_epoch(tmp_path):
    save_dir = str(tmp_path)
    latest = checkpoint_path(save_dir, "latest")
    save_checkpoint({"state_dict": {}, "epoch": 2}, latest)
    assert recovery.finished_run(save_dir, latest, 3) == (False, False)  # one epoch to go
    assert recovery.finished_run(save_dir, latest, 2) == (True, False)  # trained, no results yet
    write_results(save_dir, {"epochs": 2, "results": {"synthvid": {"mAP": 0.5}}})
    assert recovery.finished_run(save_dir, latest, 2) == (True, True)
    save_checkpoint({"state_dict": {}, "epoch": 2}, latest)  # a later run wrote the checkpoint again
    assert recovery.finished_run(save_dir, latest, 2) == (True, False)
    write_results(save_dir, {"epochs": 0, "results": {"synthvid": {"mAP": 0.5}}})  # a test-only run's results
    assert recovery.finished_run(save_dir, latest, 2) == (True, False)


def test_interrupted_json_is_written_atomically_read_back_and_removed(tmp_path):
    path = run_records.write_interrupted(str(tmp_path), {"signal": "SIGTERM", "exit_code": 143})
    record = run_records.load_interrupted(str(tmp_path))
    assert path == str(tmp_path / "interrupted.json") and os.listdir(tmp_path) == ["interrupted.json"]
    assert record["signal"] == "SIGTERM" and record["exit_code"] == 143 and "time" in record
    run_records.remove_interrupted(str(tmp_path))
    run_records.remove_interrupted(str(tmp_path))
    assert os.listdir(tmp_path) == [] and run_records.load_interrupted(str(tmp_path)) == {}
