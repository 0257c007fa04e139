"""Parameter counts and GMACs: the full ViT-B/16 at 256x128 against the paper's tables (random init, no forward
of the whole model), the CNN, and the report's arithmetic on tiny towers."""
import pytest
import torch

from tfclip_plugin.models import build_tfclip, count_parameters, model_complexity

MARS = dict(num_classes=625, num_cameras=6)


def full_vit(**options):
    torch.manual_seed(0)
    return build_tfclip("tfclip_vit", **MARS, **options)


def test_full_tfclip_vit_matches_the_reference_counts():
    report = model_complexity(full_vit(ssp="paper", ssp_layers=2, temporal="tmd"))
    assert report["backbone"] == 86_140_416
    assert report["temporal"] == 10_042_368
    assert report["ssp"] == 6_302_720
    # BNNecks (3 x 768 + 512 + 768, weight and bias), classifiers 768/512/768 -> 625, SIE 6 x 768
    assert report["heads"] == 2 * (768 * 3 + 512) + 625 * (768 + 512 + 768) + 6 * 768 == 1_290_240
    assert report["total"] == 103_775_744
    # + the reference's unused classifier_proj_temp2 (768 x 625) = Table 2 row 6 / supplement B6, 104.26M
    assert report["total"] + 768 * 625 == 104_255_744
    assert report["gmacs_per_frame"] == 11.26
    assert report["gmacs_per_frame_full"] == 11.39  # + patch embedding (0.075) and projection of 129 tokens (0.051)
    assert report["temporal_gmacs_per_frame"] == 0.95


def test_ssp_layer_step_and_released_ssp():
    one = model_complexity(full_vit(ssp="paper", ssp_layers=1, temporal="tap"))["ssp"]
    two = model_complexity(full_vit(ssp="paper", ssp_layers=2, temporal="tap"))["ssp"]
    assert two - one == 3_150_848  # supplement Table 6: 91.06 -> 94.21 -> ...
    assert one == 3_150_848 + 2 * 512  # + the LayerNorm on the video tokens
    released = model_complexity(full_vit(ssp="released", temporal="tap"))
    assert released["ssp"] == 9_195_520
    assert released["ssp_gmacs_per_clip"] > 0


def test_without_memory_or_temporal_module_only_backbone_and_heads_remain():
    report = model_complexity(full_vit(memory=False, temporal="tap"))
    assert report["ssp"] == 0 and report["temporal"] == 0 and report["ssp_gmacs_per_clip"] == 0
    assert report["heads"] == 2 * (768 + 512) + 625 * (768 + 512) + 6 * 768
    assert report["total"] == report["backbone"] + report["heads"]


def test_overlapping_patches_raise_the_backbone_cost():
    report = model_complexity(full_vit(stride=12, temporal="tap", memory=False))
    assert report["backbone"] == 86_140_416 + (21 * 10 - 16 * 8) * 768
    assert report["gmacs_per_frame"] > 18


def test_full_cnn_counts():
    torch.manual_seed(0)
    model = build_tfclip("tfclip_rn50", **MARS)
    report = model_complexity(model)
    # open_clip RN50 visual (38,316,896) with the attention-pool positions resized from 7x7+1 to 16x8+1 rows
    assert report["backbone"] == 38_316_896 + (129 - 50) * 2048
    assert report["ssp"] == 2 * (3 * 1024 ** 2 + 1024 ** 2 + 1024 + 4 * 1024 + 8 * 1024 ** 2 + 5 * 1024) + 2 * 1024
    assert report["temporal"] == count_parameters(model.temporal) and model.temporal.out_dim == 1024
    assert report["gmacs_per_frame"] == report["gmacs_per_frame_full"] > 5


def test_tiny_report_adds_up_and_refuses_another_input_size():
    torch.manual_seed(0)
    model = build_tfclip("tfclip_vit", 5, 2, height=64, width=32, vision_width=64, vision_layers=2, embed_dim=64)
    model.train()
    report = model_complexity(model, height=64, width=32)
    assert model.training  # mode restored
    assert report["total"] == report["backbone"] + report["ssp"] + report["temporal"] + report["heads"]
    assert report["total"] == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="built for 64x32 input, not 256x128"):
        model_complexity(model)


def test_text_branch_rows_b1_b5_against_the_paper():
    """Supplement Table 4 B1 (CLIP-ReID's text branch, 126.78M, 14.24G) and B5 (+ TMD, 136.86M, 14.70G)."""
    report = model_complexity(full_vit(memory="text", ssp="none", temporal="tap"))
    text_encoder, identity_tokens = 38_131_200, 625 * 4 * 512  # CLIP ViT-B/16's text tower without token_embedding
    assert report["text"] == text_encoder + identity_tokens == 39_411_200
    assert report["heads"] == 2 * (768 + 512) + 625 * (768 + 512) + 6 * 768  # the B2 heads: no new head
    assert report["total"] == 86_140_416 + 39_411_200 + 807_168 == 126_358_784
    # the paper's 126.78M is this model built for 751 identities (Market-1501): classifiers and identity tokens
    assert report["total"] + (751 - 625) * (768 + 512 + 4 * 512) == 126_778_112
    # FLOPs: the backbone's 11.26G + the text encoder on one 77-token prompt, as CLIP-ReID runs it
    assert report["text_gmacs_per_prompt"] == 2.98 and report["gmacs_per_frame"] + 2.98 == pytest.approx(14.24)
    b5 = report["total"] + 10_042_368 + 2 * 2 * 768 + 625 * 768  # + TMD, its two BNNecks and classifier
    assert b5 == 136_884_224  # paper 136.86 = its B4 (97.02) + its text-branch saving (39.84)
