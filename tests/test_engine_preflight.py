"""Failing before training: the SIE table over every split's cameras and the preflight checks of evaluation and
output writing."""
import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch

from dataset_fixtures import write_mars, write_prid2011
from engine_fixtures import tiny_config
from tfclip_plugin.data import build_datamanager
from tfclip_plugin.engine.build import build_model
from tfclip_plugin.engine.preflight import PreflightError, camera_ids, preflight, sie_table_size
from tfclip_plugin.engine.runner import run_experiment
from tfclip_plugin.files.checkpoint_file import save_checkpoint

TRAIN = [(1, 1, 9), (1, 2, 5), (4, 1, 12), (4, 2, 8), (6, 1, 4), (6, 2, 10), (7, 1, 6), (7, 2, 6)]  # cameras 1, 2
TEST = [(2, 1, 6), (2, 4, 7), (3, 2, 5), (3, 4, 6), (5, 1, 6), (5, 2, 8)]  # camera 4 only in the test split


@pytest.fixture(scope="module")
def mars_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("reid"))
    write_mars(root, TRAIN, TEST, query_rows=[0, 2, 4])
    return root


def config(root, save_dir, *opts):
    return tiny_config(root, save_dir, "data.sources", "['mars']", "data.targets", "['mars']",
                       "train.batch_size", "4", "sampler.num_instances", "2", "train.max_epoch", "1",
                       "test.ranks", "[1, 2]", *opts)


def test_sie_table_covers_every_split_and_warns_about_cameras_only_the_test_data_has(mars_root, tmp_path):
    cfg = config(mars_root, str(tmp_path))
    dm = build_datamanager(cfg)
    assert dm.num_train_cams == 2  # torchreid counts training cameras only
    ids = camera_ids(dm)
    assert ids["train"] == {0, 1} and ids["mars query"] == {0, 1} and ids["mars gallery"] == {1, 3}
    with pytest.warns(UserWarning, match=r"camera id 3 of mars gallery is not in the training split: the SIE "
                                         r"table has 4 rows and these keep their initial values") as caught:
        model = build_model(cfg, dm)
    assert len([w for w in caught if "SIE table" in str(w.message)]) == 1
    assert model.num_cameras == 4 and model.cv_embed.shape == (4, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sie_table_size(dm, warn=False) == 4
        cfg.tfclip.sie = False
        build_model(cfg, dm)  # no SIE, no warning
    cfg.tfclip.sie, cfg.tfclip.num_cameras = True, 6
    assert build_model(cfg, dm).num_cameras == 6  # tfclip.num_cameras decides


def test_a_table_too_small_for_the_test_cameras_stops_before_any_feature(mars_root, tmp_path, capsys):
    small = config(mars_root, str(tmp_path / "train"), "tfclip.num_cameras", "2")
    dm = build_datamanager(small)
    model = build_model(small, dm)
    with pytest.raises(PreflightError, match=r"camera ids 3 of the data are outside the SIE table of 2 rows "
                                             r"\(tfclip.num_cameras 2; ids 0..1\): set tfclip.num_cameras to at "
                                             r"least 4"):
        preflight(small, dm, model)
    weights = str(tmp_path / "two_cameras.pth.tar")
    save_checkpoint({"state_dict": model.state_dict()}, weights)
    test_only = config(mars_root, str(tmp_path / "test"), "test.evaluate", "True", "model.load_weights", weights,
                       "tfclip.num_cameras", "2")
    with pytest.raises(PreflightError, match=r"outside the SIE table of 2 rows \(loaded from .*two_cameras"):
        run_experiment(test_only)
    out = capsys.readouterr().out
    assert "Loaded weights from" in out and "Extracting features" not in out
    assert not os.path.exists(tmp_path / "test" / "results.json")


class StubLoader:
    def __init__(self, train, batches):
        self.dataset, self.batches = SimpleNamespace(train=list(train)), batches

    def __len__(self):
        return self.batches


def stub_datamanager(query, gallery, train=((("a",), 0, 0),), batches=1):
    """What preflight reads of a data manager: the train loader and the test tuples of one target 'toy'."""
    return SimpleNamespace(train_loader=StubLoader(train, batches),
                           test_dataset={"toy": {"query": list(query), "gallery": list(gallery)}})


def test_every_problem_is_reported_at_once_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = tiny_config(str(tmp_path), str(blocker / "run"), "test.ranks", "[1, 5, 60]", "test.dist_metric", "l1",
                      "test.batch_size", "0")
    query = [(("q",), 1, 0), (("q2",), 2, 0)]
    gallery = [(("g",), 1, 0), (("g2",), 3, 1)]  # pid 1 only in the query's camera, pid 2 absent
    model = torch.nn.Linear(2, 2)
    with pytest.raises(PreflightError) as caught:
        preflight(cfg, stub_datamanager(query, gallery, batches=0), model)
    message = str(caught.value)
    assert message.startswith("the run would fail after it started:\n  - data.save_dir ")
    assert "is not writable" in message
    assert ("test.ranks [5, 60] exceed the CMC of toy (4 ranks: 4 gallery tracklets under protocol tfclip, at most "
            "50); results.json would lack them") in message
    assert "no query of toy has a true match in its gallery (same identity, another camera; 2 queries" in message
    assert "test.dist_metric must be one of euclidean, cosine; got 'l1'" in message
    assert "the training loader yields no batch" in message and "test.batch_size must be at least 1" in message
    cfg.data.save_dir, cfg.test.batch_size = str(tmp_path / "ok"), 4
    cfg.test.ranks, cfg.test.dist_metric = [1, 2], "euclidean"
    cfg.tfclip.protocol = "torchreid"
    with pytest.raises(PreflightError, match=r"test.ranks \[2\] exceed the CMC of toy \(1 ranks") as caught:
        preflight(cfg, stub_datamanager(query, [(("g",), 1, 1)]), model)  # query vs gallery only
    assert "true match" not in str(caught.value)
    cfg.test.ranks = [1]
    preflight(cfg, stub_datamanager(query, [(("g",), 1, 1)]), model)


def test_all_splits_parse_every_split_before_the_first_trains(tmp_path):
    root = str(tmp_path / "reid")
    write_prid2011(root, [(6, 6)] * 4, [([0, 1], [2, 3]), ([2, 3], [0, 1])])  # 2 splits of the 10
    cfg = tiny_config(root, str(tmp_path / "run"), "data.sources", "['prid2011']", "data.targets", "['prid2011']",
                      "tfclip.all_splits", "True")
    with pytest.raises(PreflightError, match="tfclip.all_splits: prid2011 split 2 cannot be built: split_id exceeds"):
        run_experiment(cfg)
    assert not os.path.exists(tmp_path / "run" / "split0")


def test_under_torchrun_every_rank_stops_before_training(mars_root, tmp_path):
    config_file = tmp_path / "two_cameras.yaml"
    config_file.write_text(config(mars_root, str(tmp_path / "ddp"), "tfclip.num_cameras", "2").dump())
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tfclip_plugin", "--config-file", str(config_file)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.count("PreflightError: the run would fail after it started") == 2, done.stderr[-3000:]
    assert "outside the SIE table of 2 rows" in done.stderr and "Phase 1" not in done.stdout
    assert os.listdir(tmp_path / "ddp" / "model") == []  # the preflight's write probe left no file
