import json
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
    for sub in ("demo", "complexity", "report"):
        assert sub in text
    out = subprocess.run([sys.executable, "-m", "tfclip_plugin", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--config-file" in out.stdout and "complexity" in out.stdout


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


def test_complexity_subcommand_prints_json(capsys):
    assert main(["complexity", "tfclip.vision_width", "64", "tfclip.vision_layers", "2", "tfclip.embed_dim", "64",
                 "data.height", "64", "data.width", "32"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report) >= {"backbone", "ssp", "temporal", "heads", "total", "gmacs_per_frame"}
    assert report["total"] == report["backbone"] + report["ssp"] + report["temporal"] + report["heads"]


IMAGE_RECIPES = {  # Table 2 of the supplement: variant -> (memory, ssp)
    "clipreid_vit": ("text", "none"), "tfclip_vit_clipm": (True, "none"), "tfclip_vit_clipm_ssp": (True, "paper"),
}
TEXT_MODE_KEYS = ("memory", "stage1_epochs")  # merged once tfclip.memory takes 'text' and stage 1 has its key


@pytest.mark.parametrize("dataset, source", [("market1501", "market1501"), ("msmt17", "msmt17_trainval")])
@pytest.mark.parametrize("variant", sorted(IMAGE_RECIPES))
def test_image_recipes_hold_clipreids_recipe(variant, dataset, source):
    import yaml
    from yacs.config import CfgNode as CN

    from tfclip_plugin.configs import recipe_path

    path = recipe_path(f"{variant}_{dataset}")
    raw = yaml.safe_load(open(path, encoding="utf-8"))
    memory, ssp = IMAGE_RECIPES[variant]
    assert raw["tfclip"]["memory"] == memory and raw["tfclip"]["ssp"] == ssp and raw["tfclip"]["temporal"] == "tap"
    assert raw["tfclip"].get("stage1_epochs") == (120 if memory == "text" else None)
    for key in TEXT_MODE_KEYS:
        raw["tfclip"].pop(key, None)
    cfg = get_default_config()
    cfg.merge_from_other_cfg(CN(raw))  # every other key exists and has the default's type
    assert cfg.data.type == "image" and list(cfg.data.sources) == list(cfg.data.targets) == [source]
    assert list(cfg.data.transforms) == ["resize_bicubic", "random_flip", "pad_crop", "random_erase_pixel"]
    assert list(cfg.data.norm_mean) == list(cfg.data.norm_std) == [0.5, 0.5, 0.5]
    assert (cfg.train.batch_size, cfg.sampler.num_instances, cfg.train.max_epoch) == (64, 4, 60)
    assert cfg.train.lr == pytest.approx(5e-6) and cfg.tfclip.bias_lr_mult == 2.0
    assert cfg.tfclip.id_loss_weight == 0.25 and cfg.tfclip.protocol == "torchreid" and not cfg.tfclip.sie
    if memory is not True:
        return
    loaded = config_from_args(["--config-file", f"{variant}_{dataset}"])  # "+CLIP-M" rows load as they are
    assert loaded.tfclip.memory is True and loaded.tfclip.ssp == ssp
