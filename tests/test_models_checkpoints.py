"""Official TF-CLIP checkpoints (three generations) and our own checkpoints: mapping, reports, refusals."""
import json
import re

import numpy as np
import pytest
import torch

from model_fixtures import TINY_VIT
from tfclip_plugin.models import build_tfclip, checkpoint_generation, load_official_checkpoint, load_tfclip_state_dict

GENERATIONS = {"github": ("SSP.", "TMD.resblocks.0."), "mars-release": ("prompts_generator.", "SAT.resblocks.0."),
               "pre-release": ("prompts_generator.", "SAT.resblocks.0.")}
SSP_OF = {"github": "released", "mars-release": "released", "pre-release": "paper"}
RELEASED_SSP_NAMES = [("video_in.", "memory_proj."), ("memory_in.", "text_proj."), ("prompt_out.", "out_proj."),
                      ("self_attn_norm", "norm1"), ("cross_attn_norm", "norm2"), ("mlp_norm", "norm3"),
                      ("layers.", "decoder.")]
PAPER_SSP_NAMES = [("video_norm.", "norm."), ("cross_attn_norm", "norm1"), ("mlp_norm", "norm3"), ("layers.", "decoder.")]


def to_official(model, generation):
    """Our state dict renamed as the reference saved it for ``generation`` (docs/models.md, "Checkpoints")."""
    assert type(model.ssp).__name__ == {"released": "ReleasedSSP", "paper": "PaperSSP"}[SSP_OF[generation]]
    ssp_prefix, tmd_prefix = GENERATIONS[generation]
    names = RELEASED_SSP_NAMES if SSP_OF[generation] == "released" else PAPER_SSP_NAMES
    official = {}
    for key, value in model.state_dict().items():
        if key in ("memory", "memory_ready"):
            continue
        if key.startswith("backbone.visual."):
            key = "image_encoder." + key[len("backbone.visual."):]
        elif key.startswith("temporal."):
            key = tmd_prefix + key[len("temporal."):].replace("diffusion.", "")
        elif key.startswith("ssp."):
            key = key[len("ssp."):]
            for ours, theirs in names:
                key = key.replace(ours, theirs)
            key = ssp_prefix + key
        official[key] = value.clone()
    official["classifier_proj_temp2.weight"] = torch.randn_like(official["classifier_proj_temp.weight"])
    return official


def tiny(seed=0, ssp="released", **options):
    torch.manual_seed(seed)
    return build_tfclip("tfclip_vit", 5, 3, height=64, width=32, ssp=ssp, **{**TINY_VIT, **options})


def assert_same_weights(a, b, skip=("memory", "memory_ready")):
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa:
        if not key.startswith(skip):
            torch.testing.assert_close(sa[key], sb[key], msg=key)


@pytest.mark.parametrize("generation", list(GENERATIONS))
def test_each_generation_loads_completely(generation):
    source = tiny(seed=1, ssp=SSP_OF[generation])
    checkpoint = {"module." + k: v for k, v in to_official(source, generation).items()}
    assert checkpoint_generation({k[len("module."):]: v for k, v in checkpoint.items()}) == generation
    target = tiny(seed=2, ssp=SSP_OF[generation])
    report = load_official_checkpoint(target, checkpoint)
    assert report["generation"] == generation
    assert report["skipped"] == {"classifier_proj_temp2.weight": "unused by the reference (built and saved, never called)"}
    assert report["missing"] == ["memory", "memory_ready"]
    assert report["loaded"] == len(checkpoint) - 1
    assert_same_weights(source, target)
    x = torch.randn(2, 3, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(source.eval()(x, torch.tensor([0, 2])), target.eval()(x, torch.tensor([0, 2])))


def test_full_size_key_sets_match_the_documented_checkpoints():
    """254 keys (GitHub and MARS release), 225 (LS-VID/iLIDS release); GitHub names = the reference's own."""
    counts = {}
    for generation in GENERATIONS:
        torch.manual_seed(0)
        model = build_tfclip("tfclip_vit", 625, 6, ssp=SSP_OF[generation])
        keys = to_official(model, generation)
        counts[generation] = len(keys)
        if generation == "github":
            with np.load("tests/data/reference_parity.npz") as data:
                reference_keys = [k for k, _ in json.loads(str(data["layouts"]))["stride16"]]
            assert sorted(keys) == sorted(reference_keys)
        if generation == "pre-release":
            ssp = [k for k in keys if k.startswith("prompts_generator.")]
            assert len(ssp) == 28 and "prompts_generator.norm.weight" in ssp
            assert all(re.match(r"prompts_generator\.decoder\.[01]\.(cross_attn|norm1|norm3|mlp)\.", k)
                       for k in ssp if ".decoder." in k)
    assert counts == {"github": 254, "mars-release": 254, "pre-release": 225}


def test_ssp_of_the_other_variant_is_skipped_and_reported():
    source = tiny(seed=1, ssp="released")
    target = tiny(seed=2, ssp="paper")
    report = load_official_checkpoint(target, to_official(source, "mars-release"))
    ssp_keys = [k for k in report["skipped"] if k.startswith("prompts_generator.")]
    assert len(ssp_keys) == len([k for k in source.state_dict() if k.startswith("ssp.")])
    assert all(report["skipped"][k] == "the model's tfclip.ssp is not this checkpoint's SSP variant" for k in ssp_keys)
    assert {k for k in report["missing"] if k.startswith("ssp.")} == {k for k in target.state_dict()
                                                                      if k.startswith("ssp.")}
    assert_same_weights(source, target, skip=("memory", "memory_ready", "ssp."))


def test_ssp_weights_are_skipped_by_a_model_without_ssp():
    report = load_official_checkpoint(tiny(memory=False), to_official(tiny(seed=1), "github"))
    assert report["skipped"]["SSP.decoder.0.self_attn.q_proj.weight"] == \
        "the model has no SSP (tfclip.ssp 'none' or tfclip.memory False)"
    assert not any(k.startswith("ssp.") for k in report["missing"])


def test_tmd_weights_are_skipped_for_another_temporal_module():
    report = load_official_checkpoint(tiny(temporal="tap"), to_official(tiny(seed=1), "github"))
    assert report["skipped"]["TMD.resblocks.0.message_fc.weight"] == "TMD weights; the model's tfclip.temporal is not 'tmd'"
    assert "classifier_proj_temp.weight" in report["skipped"]


@pytest.mark.parametrize("options, message", [
    (dict(num_classes=9), r"classifier\w*\.weight has shape \(9, 64\) in the checkpoint but \(5, 64\) in the model "
                          r"\(the model has 5 classes\)"),
    (dict(num_cameras=6), r"cv_embed has shape \(6, 64\) in the checkpoint but \(3, 64\) in the model "
                          r"\(the model has 3 SIE cameras; set tfclip.num_cameras\)"),
    (dict(stride=12), r"positional_embedding has shape \(11, 64\) in the checkpoint but \(9, 64\) in the model "
                      r"\(another input size or tfclip.stride\)"),
])
def test_checkpoints_of_another_class_count_camera_count_or_grid_are_refused(options, message):
    num_classes, num_cameras = options.pop("num_classes", 5), options.pop("num_cameras", 3)
    torch.manual_seed(0)
    other = build_tfclip("tfclip_vit", num_classes, num_cameras, height=64, width=32, ssp="released", **TINY_VIT,
                         **options)
    with pytest.raises(ValueError, match=message):
        load_official_checkpoint(tiny(), to_official(other, "github"))


def test_a_vit_checkpoint_is_refused_by_the_cnn():
    torch.manual_seed(0)
    cnn = build_tfclip("tfclip_rn50", 5, 1, height=64, width=32, vision_width=16, vision_layers=1, embed_dim=64)
    with pytest.raises(ValueError, match="the image encoder does not fit the model's backbone: image_encoder.class_embedding"):
        load_official_checkpoint(cnn, to_official(tiny(), "github"))


def test_official_checkpoint_files_load_weights_only(tmp_path):
    source = tiny(seed=1)
    torch.save(to_official(source, "github"), tmp_path / "best_model.pth.tar")
    target = tiny(seed=2)
    assert load_official_checkpoint(target, tmp_path / "best_model.pth.tar")["generation"] == "github"
    assert_same_weights(source, target)
    torch.save({"weights": [1, 2]}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="expected a state dict of tensors"):
        load_official_checkpoint(target, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not an official TF-CLIP checkpoint"):
        load_official_checkpoint(target, {"fc.weight": torch.zeros(2, 2)})
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_official_checkpoint(target, tmp_path / "missing.pth")


def test_our_checkpoints_round_trip_and_refuse_other_models(tmp_path):
    source = tiny(seed=1, ssp="paper")
    source.set_memory(torch.randn(5, 64))
    torch.save({"state_dict": source.state_dict(), "epoch": 3, "rank1": 0.5}, tmp_path / "model.pth.tar-3")
    target = tiny(seed=2, ssp="paper")
    load_tfclip_state_dict(target, tmp_path / "model.pth.tar-3")
    assert_same_weights(source, target, skip=())
    assert bool(target.memory_ready)
    torch.manual_seed(0)
    more_classes = build_tfclip("tfclip_vit", 9, 3, height=64, width=32, ssp="paper", **TINY_VIT)
    with pytest.raises(ValueError, match=r"\w+ has shape \(5, 64\) in the checkpoint but \(9, 64\) in the model "
                                         r"\(the model has 9 classes\)"):
        load_tfclip_state_dict(more_classes, source.state_dict())
    with pytest.raises(ValueError, match=r"does not match the model \(another architecture or tfclip.\* variant\?\): "
                                         r"missing ssp.alpha, ssp.layers.0.self_attn"):
        load_tfclip_state_dict(tiny(ssp="released"), source.state_dict())
