import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from tfclip_plugin import host
from tfclip_plugin.files.checkpoint_file import (
    load_checkpoint, resume, rng_state, save_checkpoint, set_rng_state, state_dict_of,
)
from tfclip_plugin.models import load_matching_weights


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = str(tmp_path / "model" / "model.pth.tar-1")
    save_checkpoint({"epoch": 1, "rank1": 0.5}, path)
    save_checkpoint({"epoch": 2, "rank1": 0.75}, path)
    assert os.listdir(tmp_path / "model") == ["model.pth.tar-1"]
    assert load_checkpoint(path) == {"epoch": 2, "rank1": 0.75}

    class Unpicklable:
        pass

    with pytest.raises(Exception):
        save_checkpoint({"bad": Unpicklable()}, path)
    assert os.listdir(tmp_path / "model") == ["model.pth.tar-1"]  # old file intact, temporary removed
    assert load_checkpoint(path)["epoch"] == 2


def test_torchreid_checkpoint_with_numpy_rank1_loads_weights_only(tmp_path, capsys):
    model = nn.Linear(3, 2)
    host.utils.save_checkpoint(
        {"state_dict": model.state_dict(), "epoch": 3, "rank1": np.float32(0.25)}, str(tmp_path)
    )
    checkpoint = load_checkpoint(str(tmp_path / "model.pth.tar-3"))
    assert float(checkpoint["rank1"]) == pytest.approx(0.25) and checkpoint["epoch"] == 3


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"obj": nn.Linear(2, 2)}, path)  # a pickled module: not loadable with weights_only
    with pytest.raises(RuntimeError, match="evil.pth with weights_only=True"):
        load_checkpoint(str(path))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "missing.pth"))


def test_matching_weights_report_and_module_prefix():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 5))
    source = {"module.0.weight": torch.ones(2, 3), "module.0.bias": torch.ones(2), "1.weight": torch.ones(4, 2),
              "extra": torch.zeros(1)}
    report = load_matching_weights(model, state_dict_of({"state_dict": source}))
    assert report["loaded"] == ["0.bias", "0.weight"]
    assert report["discarded"] == ["1.weight", "extra"] and report["missing"] == ["1.bias", "1.weight"]
    assert torch.equal(model[0].weight, torch.ones(2, 3))


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_checkpoint({"rng": rng_state()}, str(tmp_path / "rng.pth"))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_resume_restores_model_optimizer_scheduler_and_epoch(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step(), scheduler.step()
    path = save_checkpoint({"state_dict": model.state_dict(), "epoch": 1, "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "rng": rng_state()}, str(tmp_path / "c.pth"))
    fresh = nn.Linear(3, 2)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.1)
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=1, gamma=0.5)
    assert resume(path, fresh, fresh_opt, fresh_sched) == 1
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(0.05) and fresh_sched.last_epoch == 1
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    weights_only = save_checkpoint({"state_dict": model.state_dict()}, str(tmp_path / "w.pth"))
    with pytest.raises(KeyError, match="not a training checkpoint"):
        resume(weights_only, fresh)
