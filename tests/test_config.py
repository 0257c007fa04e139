"""The config key table: defaults, what reads each key, the closed model options, warnings for keys that cannot
affect a run, renamed keys, and the generated docs/config.md."""
import re
import warnings
from pathlib import Path

import pytest

from tfclip_plugin.cli import ConfigError, config_from_args, merge_options
from tfclip_plugin.config import KEYS, get_default_config, ineffective_keys, model_options, warn_ineffective_keys
from tfclip_plugin.config_doc import DOC_PATH, render_config_doc
from tfclip_plugin.models import ModelOptions, build_tfclip

PACKAGE = Path(__file__).resolve().parents[1] / "tfclip_plugin"


def _module_files(name: str):
    path = PACKAGE / name.replace(".", "/")
    if path.with_suffix(".py").is_file():
        return [path.with_suffix(".py")]
    return sorted(path.glob("**/*.py"))


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_every_key_is_read_where_the_table_says(key):
    if key.applies_to == "torchreid-compat":
        assert key.read_by in ("-", "config"), f"{key.name}: torchreid-compat keys are read by nothing of ours"
        return
    leaf = key.name.split(".")[-1]
    access = re.compile(rf"(\.{leaf}\b|\"{leaf}\"|^\s+{leaf}: )", re.MULTILINE)
    for module in key.read_by.split(", "):
        files = _module_files(module)
        assert files, f"{key.name}: read_by names '{module}', which is not a module of tfclip_plugin"
        assert any(access.search(f.read_text()) for f in files), f"{key.name} is not read in {module}"


def test_model_keys_are_exactly_the_model_options_with_their_defaults():
    cfg = get_default_config()
    model_keys = [key.name[len("tfclip."):] for key in KEYS if key.read_by == "models.options"]
    assert model_keys == list(ModelOptions.names())
    assert model_options(cfg) == ModelOptions()
    cfg.tfclip.temporal, cfg.tfclip.vision_width = "tap", 64
    assert model_options(cfg) == ModelOptions(temporal="tap", vision_width=64)


def test_build_tfclip_accepts_model_options_only():
    with pytest.raises(TypeError, match=r"unknown TF-CLIP model option\(s\) protocol; valid options: clip_weights, "
                                        r"memory, ssp, ssp_layers, ssp_residual, temporal, sie"):
        build_tfclip("tfclip_vit", 3, 1, protocol="tfclip")
    with pytest.raises(TypeError, match=r"option\(s\) lr, margin"):
        ModelOptions.from_kwargs(margin=0.3, lr=1.0, temporal="tap")
    with pytest.raises(ValueError, match="tfclip.ssp_layers must be at least 1; got 0"):
        ModelOptions(ssp_layers=0)


def test_keys_that_cannot_affect_the_run_get_one_warning_naming_them():
    cfg = get_default_config()
    assert ineffective_keys(cfg) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_ineffective_keys(cfg) == []
    merge_options(cfg, ["train.lr_scheduler", "cosine", "loss.triplet.weight_x", "0.5", "video.pooling_method", "max",
                        "train.lr", "1e-4", "tfclip.precision", "bf16"])
    with pytest.warns(UserWarning) as record:
        names = warn_ineffective_keys(cfg)
    assert names == ["video.pooling_method", "train.lr_scheduler", "loss.triplet.weight_x"]
    assert len(record) == 1 and str(record[0].message).startswith(
        "these config keys are set but have no effect on TF-CLIP (tfclip_*) models: video.pooling_method, "
        "train.lr_scheduler, loss.triplet.weight_x")
    merge_options(cfg, ["model.name", "osnet_x0_25"])
    assert ineffective_keys(cfg) == ["tfclip.precision"]
    compat = get_default_config()
    merge_options(compat, ["data.k_tfm", "2"])
    assert ineffective_keys(compat) == ["data.k_tfm"]


def test_the_cli_warns_once_before_training(monkeypatch):
    cfg = config_from_args(["--model", "tfclip_vit", "train.staged_lr", "True"])
    assert ineffective_keys(cfg) == ["train.staged_lr"]


def test_replaced_keys_name_their_replacement(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'tfclip.margin' was replaced by loss.triplet.margin"):
        merge_options(get_default_config(), ["tfclip.margin", "0.5"])
    old = tmp_path / "old.yaml"
    old.write_text("tfclip:\n  label_smooth: 0.1\n")
    with pytest.raises(ConfigError, match=r"old.yaml: config key 'tfclip.label_smooth' was replaced by "
                                          r"loss.softmax.label_smooth \(True = eps 0.1\)"):
        config_from_args(["--config-file", str(old)])


def test_docs_config_page_is_generated_from_the_table():
    page = render_config_doc()
    assert Path(DOC_PATH).read_text(encoding="utf-8") == page, \
        "docs/config.md is out of date: run python -m tfclip_plugin.config_doc"
    for key in KEYS:
        assert f"| `{key.name}` |" in page
    row = next(line for line in page.splitlines() if line.startswith("| `train.lr` |"))
    assert "`demo`" in row and "`tfclip_vit_mars`" in row
    mars = page[page.index("### `tfclip_vit_mars`"):]
    mars = mars[: mars.index("\n### ", 1)] if "\n### " in mars[1:] else mars
    assert "- `train.lr`: `5e-06`\n" in mars and "- `tfclip.ssp`: `'released'`\n" in mars


def test_every_applies_to_value_has_words_on_the_config_page():
    from tfclip_plugin.config import APPLIES_TO
    from tfclip_plugin.config_doc import APPLIES_TO_WORDS

    assert set(APPLIES_TO_WORDS) == set(APPLIES_TO)
    assert {key.applies_to for key in KEYS} <= set(APPLIES_TO)
