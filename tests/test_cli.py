import json
import runpy
import subprocess
import sys

import pytest

from tfclip_plugin.cli import ConfigError, build_main_parser, config_from_args, main, merge_options, split_options
from tfclip_plugin.config import get_default_config


def test_options_after_multi_value_flag_are_options():
    flags, opts = split_options(["-s", "mars", "-t", "mars", "lsvid", "train.max_epoch", "2", "model.name", "x"])
    assert flags == ["-s", "mars", "-t", "mars", "lsvid"]
    assert opts == ["train.max_epoch", "2", "model.name", "x"]


def test_double_dash_is_dropped():
    flags, opts = split_options(["-t", "mars", "--", "train.max_epoch", "2"])
    assert flags == ["-t", "mars"] and opts == ["train.max_epoch", "2"]


def test_value_of_single_value_flag_is_not_an_option():
    flags, opts = split_options(["--root", "data.root", "-t", "mars"])
    assert flags == ["--root", "data.root", "-t", "mars"] and opts == []


def test_config_precedence_file_flags_options(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  max_epoch: 7\n  lr: 0.001\nmodel:\n  name: resnet50\n")
    cfg = config_from_args(
        ["--config-file", str(cfg_file), "-s", "synthvid", "-t", "synthvid", "mars", "--root", "/d",
         "--model", "osnet_x0_25", "train.max_epoch", "3", "tfclip.precision", "bf16"]
    )
    assert cfg.train.max_epoch == 3 and cfg.train.lr == pytest.approx(1e-3)
    assert list(cfg.data.sources) == ["synthvid"] and list(cfg.data.targets) == ["synthvid", "mars"]
    assert cfg.data.root == "/d" and cfg.model.name == "osnet_x0_25" and cfg.tfclip.precision == "bf16"


def test_model_name_option_overrides_model_flag():
    cfg = config_from_args(["--model", "osnet_x0_25", "model.name", "tfclip_rn50"])
    assert cfg.model.name == "tfclip_rn50"


def test_unknown_key_suggests_close_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_epochs'.*train.max_epoch"):
        merge_options(get_default_config(), ["train.max_epochs", "2"])


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"'train.max_epoch' expects a value of type int"):
        merge_options(get_default_config(), ["train.max_epoch", "two"])


def test_missing_config_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        config_from_args(["--config-file", str(missing)])


def test_unknown_dataset_and_model_list_what_exists(capsys):
    assert main(["-s", "marz", "-t", "mars"]) == 2
    err = capsys.readouterr().err
    assert "unknown video dataset 'marz'" in err and "mars" in err and "lsvid" in err
    assert main(["-s", "mars", "-t", "mars", "--model", "tfclip_vitt"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'tfclip_vitt'" in err and "did you mean tfclip_vit" in err


def test_dataset_names_are_checked_in_the_registry_of_data_type(capsys):
    assert main(["-s", "market1501", "-t", "market1501"]) == 2
    err = capsys.readouterr().err
    assert "unknown video dataset 'market1501' ('market1501' is an image dataset: set data.type image)" in err
    assert main(["-s", "mars", "-t", "mars", "data.type", "image"]) == 2
    err = capsys.readouterr().err
    assert "unknown image dataset 'mars' ('mars' is a video dataset: set data.type video)" in err
    assert "synthimg" in err and "msmt17_trainval" in err and "market1501" in err
    assert main(["-s", "mars", "-t", "mars", "data.type", "images"]) == 2
    assert "data.type must be one of video, image; got 'images'" in capsys.readouterr().err


def test_help_documents_every_flag_and_subcommand():
    text = build_main_parser().format_help()
    for flag in ("--config-file", "--sources", "--targets", "--transforms", "--root", "--model", "opts"):
        assert flag in text
    for sub in ("demo", "complexity", "report", "download-weights"):
        assert sub in text
    out = subprocess.run([sys.executable, "-m", "tfclip_plugin", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--config-file" in out.stdout and "complexity" in out.stdout


def test_python_dash_m_exits_with_the_status_of_the_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tfclip_plugin", "train.max_eopch", "2"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("tfclip_plugin", run_name="__main__")
    assert exited.value.code == 2
    assert "tfclip-reid: error: unknown config key 'train.max_eopch'" in capsys.readouterr().err


def test_configs_load_with_reference_recipes():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    mars = config_from_args(["--config-file", str(root / "tfclip_vit_mars.yaml")])
    assert mars.train.lr == pytest.approx(5e-6) and mars.train.max_epoch == 80
    assert list(mars.train.stepsize) == [30, 50, 70] and mars.train.batch_size == 16
    assert mars.sampler.num_instances == 4 and mars.video.seq_len == 8 and mars.tfclip.sie_coe == 1.0
    ilids = config_from_args(["--config-file", str(root / "tfclip_vit_ilidsvid.yaml")])
    assert ilids.train.max_epoch == 60 and list(ilids.train.stepsize) == [30, 50]
    assert ilids.tfclip.fc_lr_mult == 1.0 and ilids.tfclip.prompt_lr_mult == 1.0
    rn50 = config_from_args(["--config-file", str(root / "tfclip_rn50_mars.yaml")])
    assert rn50.model.name == "tfclip_rn50" and rn50.train.lr == pytest.approx(3.5e-4)
    assert rn50.train.max_epoch == 120 and list(rn50.train.stepsize) == [40, 70]
    lsvid = config_from_args(["--config-file", str(root / "tfclip_vit_lsvid.yaml")])
    assert list(lsvid.data.sources) == ["lsvid"] and lsvid.tfclip.lsvid_subtracklet == 48
    for name in ("demo.yaml",):
        assert config_from_args(["--config-file", str(root / name)]).data.sources
    b1 = config_from_args(["--config-file", "clipreid_vit_mars"])  # supplement Table 4 B1, B5; Table 1 CNN Baseline
    assert (b1.tfclip.memory, b1.tfclip.temporal, b1.tfclip.ssp) == ("text", "tap", "none")
    assert b1.tfclip.stage1_epochs == 120
    assert b1.train.lr == mars.train.lr and b1.tfclip.id_loss_weight == 0.25
    b5 = config_from_args(["--config-file", "clipreid_tmd_vit_mars"])
    assert (b5.tfclip.memory, b5.tfclip.temporal, b5.tfclip.ssp) == ("text", "tmd", "none")
    cnn = config_from_args(["--config-file", "clipreid_rn50_mars"])
    assert cnn.model.name == "tfclip_rn50" and cnn.tfclip.memory == "text" and cnn.tfclip.stage1_epochs == 60
    assert cnn.tfclip.id_loss_weight == 1.0 and cnn.train.lr == rn50.train.lr


def test_complexity_subcommand_prints_json(capsys):
    assert main(["complexity", "tfclip.vision_width", "64", "tfclip.vision_layers", "2", "tfclip.embed_dim", "64",
                 "data.height", "64", "data.width", "32"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report) >= {"backbone", "ssp", "temporal", "text", "heads", "total", "gmacs_per_frame"}
    assert report["total"] == report["backbone"] + report["ssp"] + report["temporal"] + report["heads"]
    assert report["text"] == 0 and report["text_gmacs_per_prompt"] == 0
    assert main(["complexity", "--num-classes", "10", "tfclip.vision_width", "64", "tfclip.vision_layers", "2",
                 "tfclip.embed_dim", "64", "data.height", "64", "data.width", "32", "tfclip.memory", "text",
                 "tfclip.text_width", "64", "tfclip.text_layers", "1", "tfclip.ssp", "none"]) == 0
    text = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    block = 3 * 64 * 64 + 3 * 64 + 64 * 64 + 64 + 2 * 2 * 64 + 64 * 256 + 256 + 256 * 64 + 64
    encoder = 77 * 64 + block + 2 * 64 + 64 * 64  # positions, one block, ln_final, text_projection
    assert text["text"] == encoder + 10 * 4 * 64  # + the identity tokens of 10 classes
    assert text["ssp"] == 0 and text["total"] == text["backbone"] + text["temporal"] + text["text"] + text["heads"]


def test_memory_true_false_of_older_command_lines_configs_and_checkpoints_keep_working(tmp_path):
    import torch

    from tfclip_plugin.files.checkpoint_file import save_checkpoint
    from tfclip_plugin.interop import build_from_checkpoint, checkpoint_architecture
    from tfclip_plugin.models import build_tfclip

    assert [config_from_args(["tfclip.memory", v]).tfclip.memory for v in ("True", "False", "text", "clip")] == [
        "clip", "none", "text", "clip"]
    with pytest.raises(ConfigError, match=r"'tfclip.memory' expects a value of type str; got 'maybe' \(tfclip.memory "
                                          r"must be one of clip, text, none"):
        merge_options(get_default_config(), ["tfclip.memory", "maybe"])
    for written, read in (("true", "clip"), ("false", "none"), ("text", "text")):
        (tmp_path / f"{written}.yaml").write_text(f"tfclip:\n  memory: {written}\n")
        assert config_from_args(["--config-file", str(tmp_path / f"{written}.yaml")]).tfclip.memory == read
    (tmp_path / "bad.yaml").write_text("tfclip:\n  memory: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: tfclip.memory must be one of clip, text, none"):
        config_from_args(["--config-file", str(tmp_path / "bad.yaml")])

    tiny = {"vision_width": 64, "vision_layers": 1, "embed_dim": 64}
    for old, mode in (("true", "clip"), ("false", "none")):  # checkpoints written before the text mode
        cfg = get_default_config()
        cfg.data.height, cfg.data.width = 64, 32
        for key, value in tiny.items():
            setattr(cfg.tfclip, key, value)
        cfg.tfclip.memory = mode
        model = build_tfclip("tfclip_vit", 4, 2, height=64, width=32, memory=mode, **tiny)
        config = cfg.dump().replace(f"memory: {mode}", f"memory: {old}")
        assert f"memory: {old}" in config
        path = save_checkpoint({"state_dict": model.state_dict(), "epoch": 1, "config": config},
                               str(tmp_path / f"{old}.pth.tar"))
        assert checkpoint_architecture(path).options["memory"] == mode
        rebuilt = build_from_checkpoint(path)
        assert rebuilt.memory_mode == mode and (rebuilt.ssp is None) == (mode == "none")
        torch.testing.assert_close(rebuilt.state_dict()["classifier2.weight"], model.state_dict()["classifier2.weight"])


IMAGE_RECIPES = {  # Table 2 of the supplement: variant -> (memory, ssp)
    "clipreid_vit": ("text", "none"), "tfclip_vit_clipm": ("clip", "none"), "tfclip_vit_clipm_ssp": ("clip", "paper"),
}


@pytest.mark.parametrize("dataset, source", [("market1501", "market1501"), ("msmt17", "msmt17_trainval")])
@pytest.mark.parametrize("variant", sorted(IMAGE_RECIPES))
def test_image_recipes_hold_clipreids_recipe(variant, dataset, source):
    cfg = config_from_args(["--config-file", f"{variant}_{dataset}"])
    memory, ssp = IMAGE_RECIPES[variant]
    assert (cfg.tfclip.memory, cfg.tfclip.ssp, cfg.tfclip.temporal) == (memory, ssp, "tap")
    assert cfg.tfclip.stage1_epochs == 120
    assert cfg.data.type == "image" and list(cfg.data.sources) == list(cfg.data.targets) == [source]
    assert list(cfg.data.transforms) == ["resize_bicubic", "random_flip", "pad_crop", "random_erase_pixel"]
    assert list(cfg.data.norm_mean) == list(cfg.data.norm_std) == [0.5, 0.5, 0.5]
    assert (cfg.train.batch_size, cfg.sampler.num_instances, cfg.train.max_epoch) == (64, 4, 60)
    assert cfg.train.lr == pytest.approx(5e-6) and cfg.tfclip.bias_lr_mult == 2.0
    assert cfg.tfclip.id_loss_weight == 0.25 and cfg.tfclip.protocol == "torchreid" and not cfg.tfclip.sie
