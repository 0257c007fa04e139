"""CLIP-ReID's text branch (prompts, text encoder, CLIP text weights), its losses, the text-mode model and the
CLIP-ReID checkpoint importer, with parity goldens.

``data/clipreid_parity.npz`` holds outputs of CLIP-ReID's own code (Syliz517/CLIP-ReID at eb1898b) on weights
from ``generated_tensor`` (see ``data/README.md``); the text-side goldens and a text-mode model loaded from the
generated CLIP-ReID state dicts (image features with camera ids, training outputs, text features) are checked
here at full size.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from open_clip.model import CLIP
from open_clip.tokenizer import tokenize
from safetensors.torch import save_file
from test_models_parity import disable_dropout, generated_state_dict, generated_tensor, parity_images
from test_models_weights import _save_torchscript

from tfclip_plugin.engine.losses import SupConLoss, TFCLIPLoss, image_text_contrastive_loss
from tfclip_plugin.models import (
    ModelOptions, build_tfclip, is_clipreid_state_dict, load_clipreid_checkpoint, load_weights, memory_mode,
)
from tfclip_plugin.models.clip_weights import (
    is_torchscript_archive, load_clip_text_state_dict, load_clip_text_weights, read_clip_text_state_dict,
)
from tfclip_plugin.models.text import (
    PERSON_TEMPLATE, VEHICLE_TEMPLATE, TextBranch, build_text_branch, prompt_tokens,
)

GOLDEN_FILE = Path(__file__).parent / "data" / "clipreid_parity.npz"
NUM_CLASSES = 7
TINY = dict(embed_dim=64, width=64, layers=1)
PERSON_IDS = [49406, 320, 1125, 539, 320, 343, 343, 343, 343, 2533, 269, 49407]  # SOT a photo of a X X X X person . EOT
RTOL = 1e-4  # max |ours - reference| / max |reference|; observed 6e-7 (fp32, fused vs explicit attention)


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN_FILE) as data:
        return {k: data[k] for k in data.files}


def _layout(golden, case, prefixes=("prompt_learner.", "text_encoder.")):
    return [(k, s) for k, s in json.loads(str(golden["layouts"]))[case] if k.startswith(prefixes)]


def _assert_relative(ours, expected):
    expected = torch.from_numpy(expected)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() <= RTOL * expected.abs().max()


def _tiny_branch(num_classes=5, seed=0, **kwargs):
    torch.manual_seed(seed)
    return TextBranch(num_classes, **{**TINY, **kwargs})


# ---------------------------------------------------------------------------------------------- prompts


def test_prompt_tokens_layout_matches_the_reference_tokenizer(golden):
    tokens, slots = prompt_tokens(PERSON_TEMPLATE)
    assert tokens.shape == (77,) and tokens[:12].tolist() == PERSON_IDS and not tokens[12:].any()
    assert tokens.tolist() == golden["prompt_tokens"].tolist()  # CLIP-ReID's clip.tokenize with its own vocab
    assert (slots.start, slots.stop) == (5, 9) and int(tokens.argmax()) == 11
    vehicle, vehicle_slots = prompt_tokens(VEHICLE_TEMPLATE)
    assert vehicle_slots == slots and int(vehicle.argmax()) == 11 and vehicle[9] != tokens[9]
    with pytest.raises(ValueError, match="one run of 'X' placeholders"):
        prompt_tokens("A photo of a person.")
    with pytest.raises(ValueError, match="one run of 'X' placeholders"):
        prompt_tokens("A X photo of a X person.")


def test_prompt_learner_frozen_template_is_buffers_and_identity_tokens_fill_the_slots():
    branch = _tiny_branch(num_classes=5)
    learner = branch.prompt_learner
    assert [n for n, _ in learner.named_parameters()] == ["cls_ctx"]
    assert learner.cls_ctx.shape == (5, 4, 64) and learner.cls_ctx.requires_grad
    assert abs(learner.cls_ctx.std().item() - 0.02) < 0.002
    assert {n: tuple(b.shape) for n, b in learner.named_buffers()} == {
        "tokens": (1, 77), "token_prefix": (1, 5, 64), "token_suffix": (1, 68, 64)}
    assert set(learner.state_dict()) == {"cls_ctx", "token_prefix", "token_suffix"}  # tokens are not saved
    assert learner.eot_index == 11

    table = torch.arange(49408 * 64, dtype=torch.float32).reshape(49408, 64)
    learner.set_token_embedding(table)
    ids = torch.tensor(PERSON_IDS + [0] * 65)
    torch.testing.assert_close(learner.token_prefix[0], table[ids[:5]])
    torch.testing.assert_close(learner.token_suffix[0], table[ids[9:]])
    labels = torch.tensor([3, 0, 3])
    prompts = learner(labels)
    assert prompts.shape == (3, 77, 64)
    torch.testing.assert_close(prompts[:, 5:9], learner.cls_ctx[labels])
    torch.testing.assert_close(prompts[:, :5], table[ids[:5]].expand(3, -1, -1))
    torch.testing.assert_close(prompts[:, 9:], table[ids[9:]].expand(3, -1, -1))
    with pytest.raises(ValueError, match=r"token embedding of shape \(100, 64\) does not fit the prompt"):
        learner.set_token_embedding(torch.zeros(100, 64))


def test_text_features_pool_the_eot_token_of_the_full_causal_sequence():
    branch = _tiny_branch(num_classes=5, layers=2).eval()
    encoder, labels = branch.text_encoder, torch.tensor([4, 1, 4])
    with torch.no_grad():
        features = branch.text_features(labels)
        prompts = branch.prompt_learner(labels)
        hidden = encoder.transformer(prompts + encoder.positional_embedding, attn_mask=encoder.attn_mask)
        per_token = encoder.ln_final(hidden) @ encoder.text_projection  # (3, 77, 64): every position projected
        assert features.shape == (3, 64)
        torch.testing.assert_close(features, per_token[:, 11], atol=1e-5, rtol=1e-5)
        assert all((features - per_token[:, i]).abs().max() > 1e-2 for i in (10, 12, 76))
        torch.testing.assert_close(features[0], features[2])
        assert (features[0] - features[1]).abs().max() > 1e-3
    assert "attn_mask" not in branch.state_dict()


def test_text_features_ignore_tokens_after_eot_and_follow_the_identity_tokens():
    branch = _tiny_branch(num_classes=5, layers=2).eval()
    labels = torch.tensor([2, 3])
    with torch.no_grad():
        features = branch(labels)
        branch.prompt_learner.token_suffix[:, 3:].normal_()  # padding after the EOT (suffix index 2 = position 11)
        torch.testing.assert_close(branch(labels), features)
        branch.prompt_learner.cls_ctx[3].normal_()
        changed = branch(labels)
    torch.testing.assert_close(changed[0], features[0])
    assert (changed[1] - features[1]).abs().max() > 1e-3


def test_text_tower_is_open_clips_with_openai_names_and_architecture_sizes():
    branch = _tiny_branch(layers=2)
    block = branch.text_encoder.transformer.resblocks[0]
    assert type(block.mlp.gelu).__name__ == "QuickGELU" and block.attn.num_heads == 1
    names = set(branch.state_dict())
    assert {"text_encoder.transformer.resblocks.1.attn.in_proj_weight", "text_encoder.transformer.resblocks.1.attn"
            ".out_proj.bias", "text_encoder.ln_final.weight", "text_encoder.text_projection",
            "text_encoder.positional_embedding"} <= names
    assert not any("token_embedding" in n for n in names)
    with pytest.raises(ValueError, match="text_width must be a positive multiple of 64"):
        TextBranch(5, width=96)
    with pytest.raises(ValueError, match="unknown backbone architecture 'vit_l'"):
        build_text_branch("vit_l", 5)


# ---------------------------------------------------------------------------------------------- CLIP text weights


def _tiny_clip():
    """A tiny open_clip CLIP (OpenAI key layout) with the real vocabulary and context length."""
    torch.manual_seed(1)
    return CLIP(embed_dim=64, vision_cfg=dict(image_size=32, layers=1, width=64, head_width=64, patch_size=16),
                text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=1), quick_gelu=True)


def _expected_text_features(clip, branch, labels):
    """CLIP's own ``encode_text`` of the template when every identity token is the embedding of 'X'."""
    x_id = PERSON_IDS[5]
    with torch.no_grad():
        branch.prompt_learner.cls_ctx.copy_(clip.token_embedding.weight[x_id].expand_as(branch.prompt_learner.cls_ctx))
        ours = branch(labels)
        theirs = clip.encode_text(tokenize([PERSON_TEMPLATE]).expand(len(labels), -1))
    return ours, theirs


def test_text_weights_load_from_each_file_format(tmp_path):
    clip = _tiny_clip().eval()
    state_dict = clip.state_dict()
    half = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    half.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    _save_torchscript(half, tmp_path / "ViT-B-16.pt")
    torch.save(state_dict, tmp_path / "plain.pt")
    torch.save({"epoch": 2, "state_dict": {"module." + k: v for k, v in state_dict.items()}}, tmp_path / "epoch.pt")
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp_path / "model.safetensors"))
    torch.save({"text." + k: v for k, v in state_dict.items() if not k.startswith("visual.")}, tmp_path / "text.pt")
    assert is_torchscript_archive(str(tmp_path / "ViT-B-16.pt"))
    labels = torch.tensor([0, 2])
    for name in ("ViT-B-16.pt", "plain.pt", "epoch.pt", "model.safetensors", "text.pt"):
        source = str(tmp_path / name)
        text = read_clip_text_state_dict(source, "vit")
        assert len(text) == 1 + 1 + 12 + 2 + 1 and all(v.dtype == torch.float32 for v in text.values())
        branch = _tiny_branch(num_classes=3, seed=5)
        load_clip_text_weights(branch, source, "vit")
        reference = clip
        if name == "ViT-B-16.pt":  # stored fp16: compare with CLIP on the rounded weights
            reference = _tiny_clip().eval()
            reference.load_state_dict({k: v.float() for k, v in half.items() if k in state_dict})
        for key, value in branch.text_encoder.state_dict().items():
            torch.testing.assert_close(value, reference.state_dict()[key], msg=f"{name}: {key}")
        ours, theirs = _expected_text_features(reference, branch, labels)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5, msg=name)


def test_text_weights_errors_name_the_file_and_the_mismatch(tmp_path):
    clip = _tiny_clip()
    visual_only = {k[len("visual."):]: v for k, v in clip.state_dict().items() if k.startswith("visual.")}
    torch.save(visual_only, tmp_path / "visual.pt")
    with pytest.raises(ValueError, match=r"visual.pt' holds no CLIP text tower \(expected token_embedding.weight"):
        read_clip_text_state_dict(str(tmp_path / "visual.pt"), "vit")
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    wider = _tiny_branch(width=128)
    with pytest.raises(ValueError, match=r"clip.pt' does not fit the text tower \(expected CLIP text weights of "
                                         r"width 128, depth 1, projection to 64 and 17 tensors\): mismatched "
                                         r"shapes: ln_final.bias: file \(64,\), model \(128,\)"):
        load_clip_text_weights(wider, str(tmp_path / "clip.pt"), "vit")
    deeper = _tiny_branch(layers=2)
    with pytest.raises(ValueError, match=r"depth 2, .*\): missing: transformer.resblocks.1.attn.in_proj_bias"):
        load_clip_text_weights(deeper, str(tmp_path / "clip.pt"), "vit")
    with pytest.raises(FileNotFoundError, match="no such file .*absent.pt"):
        load_clip_text_weights(deeper, str(tmp_path / "absent.pt"), "vit")


# ---------------------------------------------------------------------------------------------- losses


def test_supcon_matches_a_hand_computed_value():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    contrasts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # anchor 0 (label 0): logits (1, 0, 1), positives 0 and 2; anchor 1 (label 1): logits (0, 1, 1), positive 1
    loss = SupConLoss()(anchors, contrasts, torch.tensor([0, 1]), torch.tensor([0, 1, 0]))
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.e) - 1, abs=1e-6)
    halved = SupConLoss(temperature=0.5)(anchors, contrasts, torch.tensor([0, 1]), torch.tensor([0, 1, 0]))
    assert halved.item() == pytest.approx(math.log(1 + 2 * math.e ** 2) - 2, abs=1e-6)
    with pytest.raises(ValueError, match=r"anchor labels \[1\] have no contrast with the same label"):
        SupConLoss()(anchors, contrasts, torch.tensor([0, 1]), torch.tensor([0, 2, 0]))


def test_supcon_and_stage2_loss_match_the_reference(golden):
    meta = json.loads(str(golden["meta"]))
    scale = meta["loss_input_scale"]
    labels = torch.tensor(meta["supcon_labels"])
    images = scale * generated_tensor("supcon_image_features", (8, 512))
    texts = scale * generated_tensor("supcon_text_features", (8, 512))
    i2t, t2i = SupConLoss()(images, texts, labels, labels), SupConLoss()(texts, images, labels, labels)
    assert i2t.item() == pytest.approx(float(golden["supcon_i2t"]), rel=1e-5)
    assert t2i.item() == pytest.approx(float(golden["supcon_t2i"]), rel=1e-5)
    assert image_text_contrastive_loss(images, texts, labels).item() == pytest.approx((i2t + t2i).item(), rel=1e-6)

    pids = torch.tensor(meta["stage2_labels"])
    scores = [scale * generated_tensor(k, (8, NUM_CLASSES)) for k in ("stage2_cls_score", "stage2_cls_score_proj")]
    features = [scale * generated_tensor(k, (8, d)) for k, d in (
        ("stage2_img_feature_last", 768), ("stage2_img_feature", 768), ("stage2_img_feature_proj", 512))]
    text_features = scale * generated_tensor("stage2_text_features", (NUM_CLASSES, 512))
    logits = features[2] @ text_features.t()
    torch.testing.assert_close(logits, torch.from_numpy(golden["stage2_i2t_logits"]), atol=1e-5, rtol=1e-5)
    output = SimpleNamespace(logits=scores, features=features, v2m_logits=logits, frame_logits=None)
    terms = TFCLIPLoss(NUM_CLASSES, id_weight=0.25)(output, pids)
    assert terms["loss_v2m"].item() == pytest.approx(float(golden["stage2_i2t_ce"]), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(float(golden["stage2_loss"]), rel=1e-5)
    text_output = SimpleNamespace(logits=scores, features=features, v2m_logits=None, i2t_logits=logits,
                                  frame_logits=None)  # what a text-mode model returns
    terms = TFCLIPLoss(NUM_CLASSES, id_weight=0.25, table="i2t")(text_output, pids)
    assert set(terms) == {"loss", "loss_i2t", "loss_id", "loss_tri", "loss_frame"}
    assert terms["loss_i2t"].item() == pytest.approx(float(golden["stage2_i2t_ce"]), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(float(golden["stage2_loss"]), rel=1e-5)
    with pytest.raises(ValueError, match="table must be 'v2m' .* or 'i2t'"):
        TFCLIPLoss(NUM_CLASSES, table="t2i")


# ---------------------------------------------------------------------------------------------- parity, full size


@pytest.mark.parametrize("arch", ["vit", "rn50"])
def test_text_features_match_the_reference(golden, arch):
    layout = _layout(golden, arch)
    torch.manual_seed(0)
    branch = build_text_branch(arch, NUM_CLASSES).eval()
    ours = {k: tuple(v.shape) for k, v in branch.state_dict().items()}
    assert ours == {k: tuple(s) for k, s in layout}  # CLIP-ReID's names and shapes, nothing more
    branch.load_state_dict(generated_state_dict(layout), strict=True)
    with torch.no_grad():
        features = branch(torch.tensor(json.loads(str(golden["meta"]))["text_labels"]))
    _assert_relative(features, golden[f"{arch}_text"])


def test_text_features_from_openai_layout_weights_match_the_reference(golden):
    """Prompt template embeddings computed from a CLIP token embedding, as CLIP-ReID does at construction."""
    clip_weights = generated_state_dict(_layout(golden, "openai_text_vit", ("",)))
    torch.manual_seed(0)
    branch = build_text_branch("vit", NUM_CLASSES).eval()
    load_clip_text_state_dict(branch, clip_weights, "generated")
    with torch.no_grad():
        branch.prompt_learner.cls_ctx.copy_(generated_tensor("prompt_learner.cls_ctx", (NUM_CLASSES, 4, 512)))
        features = branch(torch.tensor(json.loads(str(golden["meta"]))["text_labels"]))
    _assert_relative(features, golden["vit_text_from_clip"])


# ---------------------------------------------------------------------------------------------- text-mode model

TINY_MODEL = dict(height=64, width=32, vision_width=64, vision_layers=2, embed_dim=64, text_width=64, text_layers=1)
CLIPREID_NAMES = {"backbone.visual.": "image_encoder.", "text.prompt_learner.": "prompt_learner.",
                  "text.text_encoder.": "text_encoder.", "classifier2.": "classifier."}


def tiny_text_model(name="tfclip_vit", num_classes=5, num_cameras=3, seed=0, **options):
    """A tiny text-mode model, CLIP-ReID's architecture unless ``options`` say otherwise."""
    torch.manual_seed(seed)
    settings = {**TINY_MODEL, "memory": "text", "temporal": "tap", "ssp": "none", **options}
    if name == "tfclip_rn50":
        settings.update(vision_width=8, vision_layers=1, sie=False)
    return build_tfclip(name, num_classes, num_cameras, **settings)


def clipreid_state_dict(model):
    """``model``'s weights under CLIP-ReID's names (make_model_clipreid's ``state_dict()``), no class table."""
    renamed = {}
    for key, value in model.state_dict().items():
        if key in ("memory", "memory_ready"):
            continue
        prefix = next((p for p in CLIPREID_NAMES if key.startswith(p)), "")
        renamed[CLIPREID_NAMES.get(prefix, "") + key[len(prefix):]] = value.clone()
    return renamed


def test_memory_mode_takes_three_modes_and_reads_the_booleans_of_older_configs():
    assert [memory_mode(v) for v in (True, False, "True", "false", "clip", "text", "none", "Text")] == [
        "clip", "none", "clip", "none", "clip", "text", "none", "text"]
    for bad in ("yes", 1, None, "memory"):
        with pytest.raises(ValueError, match=r"tfclip.memory must be one of clip, text, none \(or True = 'clip', "
                                             r"False = 'none'\); got"):
            memory_mode(bad)
    assert ModelOptions(memory=False).memory == "none" and ModelOptions(memory=True).memory == "clip"
    assert ModelOptions().memory == "clip" and (ModelOptions().text_width, ModelOptions().text_layers) == (0, 0)
    assert build_tfclip("tfclip_vit", 3, 2, **{**TINY_MODEL, "memory": False}).memory_mode == "none"


def test_text_mode_model_holds_a_frozen_text_branch_and_gives_text_features():
    model = tiny_text_model()
    assert isinstance(model.text, TextBranch) and model.ssp is None and model.memory_mode == "text"
    text_params = {n for n, p in model.named_parameters() if n.startswith("text.")}
    assert "text.prompt_learner.cls_ctx" in text_params
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("text."))
    assert model.text.prompt_learner.cls_ctx.shape == (5, 4, 64)
    assert len(model.text.text_encoder.transformer.resblocks) == 1
    assert model.feature_dim == 64 + 64  # [f_cls | f_proj], no temporal part with 'tap'
    labels = torch.tensor([4, 0, 4])
    with torch.no_grad():
        features = model.text_features(labels)
        torch.testing.assert_close(features, model.text.text_features(labels))
        table = model.identity_text_features(batch_size=2)
    assert features.shape == (3, 64) and table.shape == (5, 64)
    torch.testing.assert_close(table[labels], features)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\); got \[0, 5\]"):
        model.text_features(torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="expected labels as a 1-D integer tensor"):
        model.text_features(torch.tensor([[0]]))
    clip_mode = build_tfclip("tfclip_vit", 5, 3, **{**TINY_MODEL, "memory": "clip"})
    assert clip_mode.text is None and "text.prompt_learner.cls_ctx" not in clip_mode.state_dict()
    with pytest.raises(ValueError, match="text features need a model built with tfclip.memory 'text'; this one has "
                                         "'clip'"):
        clip_mode.text_features(labels)
    tmd = tiny_text_model(temporal="tmd")
    assert tmd.feature_dim == 64 + 64 + 64
    rn50 = tiny_text_model("tfclip_rn50")
    assert rn50.feature_dim == 256 + 64  # CLIP-ReID's RN50 keeps the pooled layer4 map: [img_feature | proj]
    assert build_tfclip("tfclip_rn50", 5, 3, **{**TINY_MODEL, "vision_width": 8, "vision_layers": 1,
                                                 "sie": False, "temporal": "tap"}).feature_dim == 64


def test_text_mode_refuses_a_branch_that_does_not_fit():
    from tfclip_plugin.models import TFCLIP
    from tfclip_plugin.models.backbone import build_backbone

    backbone = build_backbone("vit", 64, 32, vision_width=64, vision_layers=1, embed_dim=64)
    with pytest.raises(ValueError, match="a text branch goes with tfclip.memory 'text' and only with it; got memory "
                                         "'clip' and a text branch"):
        TFCLIP(backbone, 5, memory="clip", text=build_text_branch("vit", 5, 64, 1, 64))
    with pytest.raises(ValueError, match="got memory 'text' and no text branch"):
        TFCLIP(backbone, 5, memory="text")
    with pytest.raises(ValueError, match="the text branch projects to 32 dimensions but the visual tower to 64"):
        TFCLIP(backbone, 5, memory="text", text=build_text_branch("vit", 5, 64, 1, 32))


def test_text_mode_training_adds_the_penultimate_feature_and_image_to_text_logits():
    model = tiny_text_model().train()
    disable_dropout(model)
    clips, cams = torch.randn(2, 3, 3, 64, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2])
    with torch.no_grad():
        out = model(clips, cams)
        assert out.i2t_logits is None and out.v2m_logits is None  # the text features are not set yet
        assert len(out.logits) == 2 and out.frame_logits is None
        f_last, f_cls, f_proj = out.features
        offsets = model._camera_offsets(cams, 2, 3)
        frames, penultimate = model.backbone.forward_with_penultimate(clips.flatten(0, 1), offsets)
        torch.testing.assert_close(f_last, penultimate.unflatten(0, (2, 3)).mean(1))
        torch.testing.assert_close(f_cls, frames.cls.unflatten(0, (2, 3)).mean(1))
        table = model.identity_text_features()
        model.set_memory(table)
        out = model(clips, cams)
        torch.testing.assert_close(out.i2t_logits, out.features[2] @ table.t())  # raw dot products, no temperature
        assert out.v2m_logits is None
        model.eval()
        torch.testing.assert_close(model(clips, cams), torch.cat([f_cls, f_proj], dim=1))
    tmd = tiny_text_model(temporal="tmd").train()
    out = tmd(clips, cams)
    assert len(out.features) == 4 and len(out.logits) == 3 and out.frame_logits.shape == (6, 5)
    frames_out = tmd(clips[:, 0], cams)  # frames (N, 3, H, W): torchreid's convention, the logits
    assert isinstance(frames_out, list) and len(frames_out) == 3


def test_memory_none_builds_neither_table_logits_nor_ssp():
    model = build_tfclip("tfclip_vit", 5, 3, **{**TINY_MODEL, "memory": "none", "ssp": "paper"}).train()
    assert model.ssp is None and model.text is None
    model.set_memory(torch.randn(5, 64))
    out = model(torch.randn(2, 2, 3, 64, 32), torch.tensor([0, 1]))
    assert out.v2m_logits is None and out.i2t_logits is None and len(out.features) == 3


def test_text_mode_ssp_refines_the_text_table_as_it_does_the_clip_memory():
    model = tiny_text_model(ssp="paper").train()
    disable_dropout(model)
    table = torch.randn(5, 64)
    model.set_memory(table)
    clips = torch.randn(2, 2, 3, 64, 32)
    with torch.no_grad():
        out = model(clips)
        frames = model.backbone(clips.flatten(0, 1))
        video = model.backbone.project(frames.tokens.unflatten(0, (2, -1)).mean(1))
        expected = torch.einsum("be,bce->bc", out.features[2], table + model.ssp(table, video))
    torch.testing.assert_close(out.i2t_logits, expected, atol=1e-5, rtol=1e-5)


def test_clip_weights_fill_both_towers_from_one_read_of_the_file(tmp_path, monkeypatch):
    from tfclip_plugin.models import clip_weights

    clip = _tiny_clip().eval()
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    reads = []
    original = clip_weights._read_state_dict
    monkeypatch.setattr(clip_weights, "_read_state_dict", lambda *a: reads.append(a) or original(*a))
    model = tiny_text_model(pretrained=True, clip_weights=str(tmp_path / "clip.pt"), vision_layers=1, text_layers=1)
    assert len(reads) == 1
    torch.testing.assert_close(model.backbone.visual.conv1.weight, clip.visual.conv1.weight)
    ours, theirs = _expected_text_features(clip, model.text, torch.tensor([0, 3]))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- CLIP-ReID, full size


def _clipreid_model(golden, arch):
    name, sie = {"vit": ("tfclip_vit", True), "rn50": ("tfclip_rn50", False)}[arch]
    torch.manual_seed(0)
    model = build_tfclip(name, NUM_CLASSES, 6, memory="text", temporal="tap", ssp="none", sie=sie)
    report = load_clipreid_checkpoint(model, generated_state_dict(json.loads(str(golden["layouts"]))[arch]))
    return model, report


@pytest.fixture(scope="module")
def clipreid_vit(golden):
    return _clipreid_model(golden, "vit")


@pytest.fixture(scope="module")
def clipreid_rn50(golden):
    return _clipreid_model(golden, "rn50")


def _check_clipreid_model(golden, model, arch, images, cams):
    meta = json.loads(str(golden["meta"]))
    model.eval()
    with torch.no_grad():
        _assert_relative(model(images, cams), golden[f"{arch}_eval"])
        _assert_relative(model.encode_for_memory(images[:, None]), golden[f"{arch}_image"])
        text = model.text_features(torch.tensor(meta["text_labels"]))
        _assert_relative(text, golden[f"{arch}_text"])
        torch.testing.assert_close(model.memory[meta["text_labels"]], text)  # the table computed on import
        model.train()
        disable_dropout(model)
        out = model(images[:, None], cams)
    for ours, key in zip(out.logits, ("cls_score", "cls_score_proj")):
        _assert_relative(ours, golden[f"{arch}_{key}"])
    for ours, key in zip(out.features, ("img_feature_last", "img_feature", "img_feature_proj")):
        _assert_relative(ours, golden[f"{arch}_{key}"])
    torch.testing.assert_close(out.i2t_logits, out.features[2] @ model.memory.t())


def test_clipreid_vit_with_sie_is_the_reference_model(golden, clipreid_vit):
    model, report = clipreid_vit
    assert report == {"origin": "CLIP-ReID", "architecture": "vit", "loaded": 316, "num_classes": NUM_CLASSES,
                      "num_cameras": 6}
    cams = torch.tensor(json.loads(str(golden["meta"]))["vit_cams"])
    _check_clipreid_model(golden, model, "vit", parity_images(3), cams)
    model.eval()
    with torch.no_grad():
        _assert_relative(model(parity_images(3)), golden["vit_eval_no_cam"])
    assert model.feature_dim == 1280


def test_clipreid_rn50_is_the_reference_model(golden, clipreid_rn50):
    model, report = clipreid_rn50
    assert report["architecture"] == "rn50" and report["loaded"] == 502 and report["num_cameras"] == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # training mode normalises over 2 images: other kernels' rounding is amplified
    try:
        _check_clipreid_model(golden, model, "rn50", parity_images(2), None)
    finally:
        torch.set_num_threads(threads)
    assert model.feature_dim == 3072


# ---------------------------------------------------------------------------------------------- CLIP-ReID importer


def test_clipreid_import_round_trip_of_a_tiny_model_and_the_dispatcher(tmp_path):
    source = tiny_text_model(seed=1)
    source.eval()
    state = clipreid_state_dict(source)
    assert is_clipreid_state_dict(state) and "classifier.weight" in state and "cv_embed" in state
    path = tmp_path / "clip_market1501.pt"
    torch.save({"module." + k: v for k, v in state.items()}, path)  # saved from DataParallel
    target = tiny_text_model(seed=2)
    report = load_weights(target, str(path))
    assert report["origin"] == "CLIP-ReID" and report["loaded"] == len(state)
    for key, value in source.state_dict().items():
        if key not in ("memory", "memory_ready"):
            assert torch.equal(target.state_dict()[key], value), key
    assert bool(target.memory_ready)
    torch.testing.assert_close(target.memory, source.identity_text_features())


def test_clipreid_importer_refusals_name_what_to_change():
    state = clipreid_state_dict(tiny_text_model())
    with pytest.raises(ValueError, match=r"CLIP-ReID checkpoint: it was trained on 5 identities \(classifier.weight, "
                                         r"prompt_learner.cls_ctx\) but the model has 6 classes; build it with "
                                         r"num_classes=5"):
        load_clipreid_checkpoint(tiny_text_model(num_classes=6), state)
    with pytest.raises(ValueError, match=r"its SIE table has 3 cameras \(cv_embed\) but the model's 4; build it with "
                                         r"num_cameras=3 \(tfclip.num_cameras\)"):
        load_clipreid_checkpoint(tiny_text_model(num_cameras=4), state)
    with pytest.raises(ValueError, match="has an SIE camera table of 3 cameras .* but the model has none; build it "
                                         "with sie=True and num_cameras=3"):
        load_clipreid_checkpoint(tiny_text_model(sie=False), state)
    no_sie = {k: v for k, v in state.items() if k != "cv_embed"}
    with pytest.raises(ValueError, match=r"it has no SIE camera table \(cv_embed; trained without "
                                         r"MODEL.SIE_CAMERA\) but the model has one; build it with sie=False"):
        load_clipreid_checkpoint(tiny_text_model(), no_sie)
    with pytest.raises(ValueError, match=r"image_encoder.positional_embedding has 9 rows \(8 grid cells\) but the "
                                         r"model's 11: at 64x32 that is tfclip.stride 16"):
        load_clipreid_checkpoint(tiny_text_model(stride=12), state)
    with pytest.raises(ValueError, match="build it with memory='text', temporal='tap', ssp='none'"):
        load_clipreid_checkpoint(tiny_text_model(temporal="tmd"), state)
    with pytest.raises(ValueError, match="build it with memory='text', temporal='tap', ssp='none'"):
        load_clipreid_checkpoint(build_tfclip("tfclip_vit", 5, 3, **{**TINY_MODEL, "memory": "clip"}), state)
    rn50_state = clipreid_state_dict(tiny_text_model("tfclip_rn50"))
    with pytest.raises(ValueError, match=r"the checkpoint's image encoder is an RN50 \(tfclip_rn50\), the model's a "
                                         r"ViT \(tfclip_vit\)"):
        load_clipreid_checkpoint(tiny_text_model(), rn50_state)
    with pytest.raises(ValueError, match=r"the checkpoint's image encoder is a ViT \(tfclip_vit\), the model's an "
                                         r"RN50"):
        load_clipreid_checkpoint(tiny_text_model("tfclip_rn50"), state)
    deeper = tiny_text_model(text_layers=2)
    with pytest.raises(ValueError, match=r"does not match the model \(another tower size\?\): missing "
                                         r"text.text_encoder.transformer.resblocks.1"):
        load_clipreid_checkpoint(deeper, state)


def test_clipreid_importer_refuses_files_of_other_origins():
    ours = build_tfclip("tfclip_vit", 5, 3, **{**TINY_MODEL, "memory": "clip", "ssp": "released"})
    with pytest.raises(ValueError, match="this is a tfclip_plugin checkpoint .* load it with load_tfclip_state_dict"):
        load_clipreid_checkpoint(tiny_text_model(), ours.state_dict())
    official = {("image_encoder." + k[len("backbone.visual."):] if k.startswith("backbone.visual.") else k): v
                for k, v in ours.state_dict().items() if not k.startswith(("memory", "ssp."))}
    official["TMD.resblocks.0.message_ln.weight"] = torch.ones(64)
    with pytest.raises(ValueError, match="this is an official TF-CLIP checkpoint .* load it with "
                                         "load_official_checkpoint"):
        load_clipreid_checkpoint(tiny_text_model(), official)
    baseline = {k: v for k, v in clipreid_state_dict(tiny_text_model()).items()
                if not k.startswith(("prompt_learner.", "text_encoder."))}
    with pytest.raises(ValueError, match=r"a CLIP-ReID baseline \(model/make_model.py: image encoder and heads, no "
                                         r"prompt_learner.\* / text_encoder.\*\) is not supported"):
        load_clipreid_checkpoint(tiny_text_model(), baseline)
    with pytest.raises(ValueError, match="not a CLIP-ReID checkpoint"):
        load_clipreid_checkpoint(tiny_text_model(), {"weight": torch.zeros(1)})
