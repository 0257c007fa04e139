"""CLIP-ReID's text branch (prompts, text encoder, CLIP text weights) and its losses, with parity goldens.

``data/clipreid_parity.npz`` holds outputs of CLIP-ReID's own code (Syliz517/CLIP-ReID at eb1898b) on weights
from ``generated_tensor`` (see ``data/README.md``); the text-side goldens are checked here at full size.
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
from test_models_parity import generated_state_dict, generated_tensor
from test_models_weights import _save_torchscript

from tfclip_plugin.engine.losses import SupConLoss, TFCLIPLoss, image_text_contrastive_loss
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
