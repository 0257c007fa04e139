"""The runner: baselines under the same protocol, all-splits aggregation, RRS test sampling, the demo."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_fixtures import SYNTHVID_SIZE, tiny_config

from tfclip_plugin import configs
from tfclip_plugin.cli import ConfigError, config_from_args
from tfclip_plugin.data import generate_synthvid
from tfclip_plugin.engine import runner
from tfclip_plugin.engine.baselines import VideoSoftmaxBaselineEngine, VideoTripletBaselineEngine
from tfclip_plugin.configs import recipe_path
from tfclip_plugin.engine import demo
from tfclip_plugin.engine.demo import demo_config
from tfclip_plugin.engine.runner import run_all_splits, run_single, tee_stdout
from tfclip_plugin.files.results import aggregate_splits


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    generate_synthvid(root, seed=4, **SYNTHVID_SIZE)
    return root


def test_torchreid_baseline_trains_on_its_engine_and_is_tested_like_tfclip(data_root, tmp_path, monkeypatch):
    engines = []
    original = runner.build_engine

    def record(*args):
        engines.append(original(*args))
        return engines[-1]

    monkeypatch.setattr(runner, "build_engine", record)
    baseline = run_single(tiny_config(data_root, str(tmp_path / "b"), "model.name", "shufflenet_v2_x0_5",
                                      "loss.name", "triplet", "train.max_epoch", "1"))
    tfclip = run_single(tiny_config(data_root, str(tmp_path / "t"), "test.evaluate", "True"))
    assert isinstance(engines[0], VideoTripletBaselineEngine)
    assert baseline["model"] == "shufflenet_v2_x0_5" and baseline["wall_seconds"]["train"] > 0
    ours, theirs = tfclip["results"]["synthvid"], baseline["results"]["synthvid"]
    for key in ("protocol", "test_sampling", "num_query", "num_gallery", "num_valid_queries"):
        assert ours[key] == theirs[key], key
    with np.load(tmp_path / "b" / "test_outputs" / "synthvid.npz") as npz:
        assert npz["query_features"].shape == (ours["num_query"], 1024)  # ShuffleNet features, frame-averaged
    softmax = runner.build_engine(tiny_config(data_root, str(tmp_path / "s"), "model.name", "shufflenet_v2_x0_5",
                                              "loss.name", "softmax"), engines[0].datamanager, engines[0].model,
                                  engines[0].optimizer, engines[0].scheduler)
    assert isinstance(softmax, VideoSoftmaxBaselineEngine)
    with pytest.raises(ValueError, match="loss.name must be 'softmax' or 'triplet'"):
        runner.build_engine(tiny_config(data_root, str(tmp_path / "x"), "model.name", "osnet_x0_25",
                                        "loss.name", "arcface"), None, None, None, None)


def test_rrs_sampling_uses_one_clip_per_tracklet(data_root, tmp_path):
    dense = run_single(tiny_config(data_root, str(tmp_path / "d"), "test.evaluate", "True"))
    rrs = run_single(tiny_config(data_root, str(tmp_path / "r"), "test.evaluate", "True",
                                 "tfclip.test_sampling", "rrs", "tfclip.protocol", "official"))
    result = rrs["results"]["synthvid"]
    assert rrs["test_sampling"] == result["test_sampling"] == "rrs" and result["protocol"] == "official"
    assert result["num_query"] == dense["results"]["synthvid"]["num_query"]
    assert result["mAP"] != dense["results"]["synthvid"]["mAP"]
    assert "test.log-" in " ".join(os.listdir(tmp_path / "r"))


def test_all_splits_run_each_split_and_report_mean_and_std(data_root, tmp_path):
    cfg = tiny_config(data_root, str(tmp_path), "test.evaluate", "True", "tfclip.all_splits", "True")
    results = run_all_splits(cfg, num_splits=2)
    per_split = [json.loads((tmp_path / f"split{i}" / "results.json").read_text()) for i in range(2)]
    assert [r["config"]["data"]["split_id"] for r in per_split] == [0, 1]
    maps = [r["results"]["synthvid"]["mAP"] for r in per_split]
    summary = results["summary"]["synthvid"]
    assert summary["mAP"]["per_split"] == maps and summary["mAP"]["mean"] == pytest.approx(np.mean(maps))
    assert summary["mAP"]["std"] == pytest.approx(np.std(maps, ddof=1))
    assert set(summary) == {"mAP", "mINP", "rank1", "rank5", "rank10", "rank20"}
    assert json.loads((tmp_path / "results.json").read_text())["splits"] == 2


def test_aggregate_splits_mean_and_sample_std():
    runs = [{"results": {"t": {"mAP": m, "mINP": 0.5, "cmc": {"1": r}}}} for m, r in ((0.2, 0.5), (0.4, 0.7))]
    summary = aggregate_splits(runs)["t"]
    assert summary["mAP"]["mean"] == pytest.approx(0.3) and summary["mAP"]["std"] == pytest.approx(0.1414213562)
    assert summary["rank1"]["mean"] == pytest.approx(0.6) and summary["mINP"]["std"] == 0.0


def test_demo_prints_a_table_and_ends_with_one_json_line(data_root, tmp_path, monkeypatch, capsys):
    shipped = open(recipe_path("demo"), encoding="utf-8").read()
    quick = shipped.replace("max_epoch: 30", "max_epoch: 1").replace("vision_width: 128", "vision_width: 64")
    quick = quick.replace("vision_layers: 4", "vision_layers: 2").replace("embed_dim: 128", "embed_dim: 64")
    for line in ("max_epoch: 1\n", "vision_width: 64\n", "vision_layers: 2\n", "embed_dim: 64\n"):
        assert line in quick  # the shipped demo still sets these keys
    (tmp_path / "demo.yaml").write_text(quick, encoding="utf-8")
    monkeypatch.setattr(demo, "recipe_path", lambda name: str(tmp_path / "demo.yaml"))
    monkeypatch.setitem(demo.DEMO_BASELINE, "model.name", "shufflenet_v2_x0_5")
    threads = torch.get_num_threads()
    summary = demo.run_demo(root=data_root, save_dir=str(tmp_path), threads=1)
    assert torch.get_num_threads() == threads
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == summary
    assert {"untrained_map", "trained_map", "baseline_map", "baseline_model", "seconds"} <= set(summary)
    assert summary["baseline_model"] == "shufflenet_v2_x0_5" and summary["seconds"] > 0
    assert any(line.startswith("TF-CLIP, untrained") for line in lines[-5:])
    for run in ("untrained", "tfclip", "baseline"):
        assert (tmp_path / run / "results.json").is_file()


def test_configs_folder_holds_the_shipped_recipes_and_names_resolve():
    repo_configs = Path(__file__).resolve().parents[1] / "configs"
    assert repo_configs.resolve() == Path(configs.FOLDER).resolve()
    assert {"demo", "tfclip_vit_mars", "tfclip_vit_lsvid", "tfclip_vit_ilidsvid", "tfclip_rn50_mars",
            "clipreid_vit_mars", "clipreid_tmd_vit_mars", "clipreid_rn50_mars", "clipreid_vit_market1501",
            "tfclip_vit_clipm_msmt17", "tfclip_vit_clipm_ssp_market1501"} <= set(configs.recipe_names())
    by_name = config_from_args(["--config-file", "tfclip_vit_mars"])
    by_path = config_from_args(["--config-file", str(repo_configs / "tfclip_vit_mars.yaml")])
    assert by_name == by_path and by_name.data.save_dir == "log/tfclip_vit_mars"
    demo_cfg = demo_config(root="r", save_dir="s")
    assert (demo_cfg.data.root, demo_cfg.data.save_dir, demo_cfg.tfclip.vision_width) == ("r", "s", 128)
    with pytest.raises(ConfigError, match=r"config file not found: nope.yaml \(shipped recipes: (\w+, )*demo, "
                                          r"tfclip_rn50"):
        config_from_args(["--config-file", "nope.yaml"])


def test_tee_copies_stdout_to_a_file_and_restores_it(tmp_path, capsys):
    console = sys.stdout
    with tee_stdout(str(tmp_path / "logs" / "train.log")):
        print("inside")
    print("after")
    assert sys.stdout is console and not console.closed
    assert (tmp_path / "logs" / "train.log").read_text() == "inside\n"
    assert capsys.readouterr().out == "inside\nafter\n"


def test_visrank_and_reranking_use_the_protocol_gallery(data_root, tmp_path):
    plain = run_single(tiny_config(data_root, str(tmp_path / "p"), "test.evaluate", "True"))
    ranked = run_single(tiny_config(data_root, str(tmp_path / "r"), "test.evaluate", "True", "test.rerank", "True",
                                    "test.visrank", "True", "test.visrank_topk", "3"))
    before, after = plain["results"]["synthvid"], ranked["results"]["synthvid"]
    assert after["rerank"] and not before["rerank"] and after["mAP"] != before["mAP"]
    folders = os.listdir(tmp_path / "r" / "visrank_synthvid")
    assert len(folders) == after["num_query"]  # one folder per query, ranked against query + gallery
