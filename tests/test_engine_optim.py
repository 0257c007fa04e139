import pytest
import torch
from torch import nn

from tfclip_plugin.config import get_default_config
from tfclip_plugin.engine.optim import (WarmupMultiStep, build_optimizer, build_scheduler, parameter_groups,
                                       parameter_settings)


class NamedLikeTFCLIP(nn.Module):
    """Parameter names as in TFCLIP: backbone, cv_embed, ssp, temporal, BNNecks with frozen biases, heads."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.cv_embed = nn.Parameter(torch.zeros(3, 4))
        self.ssp = nn.Sequential(nn.Linear(4, 4))
        self.temporal = nn.Sequential(nn.Linear(4, 4))
        self.bottleneck = nn.BatchNorm1d(4)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier2 = nn.Linear(4, 3, bias=False)
        self.classifier_proj_temp = nn.Linear(4, 3, bias=False)
        self.classifier_proj_temp2 = nn.Linear(4, 3, bias=False)
        self.temporal_head = nn.Linear(4, 4, bias=True)  # "temporal" in the name, not the prefix


def test_each_parameter_gets_the_reference_lr_and_weight_decay():
    cfg = get_default_config()  # lr 5e-6, wd 1e-4, bias x2 (wd 1e-4), fc x10, prompt x10
    cfg.tfclip.bias_weight_decay = 5e-4  # distinguishable from the base decay
    got = parameter_settings(NamedLikeTFCLIP(), cfg)
    expected = {
        "backbone.0.weight": (5e-6, 1e-4), "backbone.0.bias": (1e-5, 5e-4),
        "backbone.1.weight": (5e-6, 1e-4), "backbone.1.bias": (1e-5, 5e-4),
        "cv_embed": (5e-6, 1e-4),
        "ssp.0.weight": (5e-5, 1e-4), "ssp.0.bias": (1e-4, 5e-4),
        "temporal.0.weight": (5e-5, 1e-4), "temporal.0.bias": (1e-4, 5e-4),
        "bottleneck.weight": (5e-6, 1e-4),
        "classifier2.weight": (5e-6, 1e-4),
        "classifier_proj_temp.weight": (5e-5, 1e-4), "classifier_proj_temp2.weight": (5e-5, 1e-4),
        "temporal_head.weight": (5e-6, 1e-4), "temporal_head.bias": (1e-5, 5e-4),
    }
    assert set(got) == set(expected)  # the frozen BN bias is left out
    for name, (lr, decay) in expected.items():
        assert got[name] == (pytest.approx(lr), pytest.approx(decay)), name


def test_released_github_setting_keeps_the_fc_multiplier_and_loses_the_prompt_one():
    # configs/vit_clipreid.yml: LARGE_FC_LR True (x10 on classifier_proj_temp*), LARGE_Prompt_LR True, which
    # matches no parameter name of the GitHub code (SSP/TMD, not prompts_generator/SAT): a no-op there
    cfg = get_default_config()
    cfg.tfclip.prompt_lr_mult = 1.0
    cfg.tfclip.fc_lr_mult = 10.0
    got = parameter_settings(NamedLikeTFCLIP(), cfg)
    assert got["ssp.0.weight"][0] == pytest.approx(5e-6) and got["temporal.0.bias"][0] == pytest.approx(1e-5)
    assert got["classifier_proj_temp.weight"][0] == pytest.approx(5e-5)
    assert got["classifier_proj_temp2.weight"][0] == pytest.approx(5e-5)


def test_official_ilids_setting_has_neither_multiplier():
    cfg = get_default_config()
    cfg.tfclip.prompt_lr_mult = 1.0  # the official iLIDS run: LARGE_FC_LR and LARGE_Prompt_LR off
    cfg.tfclip.fc_lr_mult = 1.0
    got = parameter_settings(NamedLikeTFCLIP(), cfg)
    assert got["ssp.0.weight"][0] == pytest.approx(5e-6) and got["temporal.0.bias"][0] == pytest.approx(1e-5)
    assert got["classifier_proj_temp.weight"][0] == pytest.approx(5e-6)


def test_optimizer_groups_carry_the_settings_and_names():
    cfg = get_default_config()
    model = NamedLikeTFCLIP()
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["betas"] == (0.9, 0.999)
    assert optimizer.defaults["fused"] is True
    settings = parameter_settings(model, cfg)
    params = dict(model.named_parameters())
    seen = set()
    for group in optimizer.param_groups:
        for name, param in zip(group["param_names"], group["params"]):
            assert param is params[name]
            assert (group["lr"], group["weight_decay"]) == settings[name]
            seen.add(name)
    assert seen == set(settings)
    assert optimizer.param_groups[-1]["lr"] == pytest.approx(5e-6)  # what torchreid prints as lr
    cfg.train.optim = "rmsprop"
    with pytest.raises(ValueError, match="train.optim must be"):
        build_optimizer(model, cfg)


def test_fused_adam_takes_the_same_steps_as_the_per_parameter_loop():
    cfg = get_default_config()
    cfg.train.lr = 1e-3
    fused_model, loop_model = NamedLikeTFCLIP(), NamedLikeTFCLIP()
    loop_model.load_state_dict(fused_model.state_dict())
    fused = build_optimizer(fused_model, cfg)
    loop = torch.optim.Adam(parameter_groups(loop_model, cfg), lr=cfg.train.lr, foreach=False)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        grads = {name: torch.randn(p.shape, generator=generator) for name, p in fused_model.named_parameters()}
        for model, optimizer in ((fused_model, fused), (loop_model, loop)):
            for name, p in model.named_parameters():
                p.grad = grads[name].clone()
            optimizer.step()
    for (name, a), b in zip(fused_model.named_parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_schedule_multipliers_per_epoch():
    rule = WarmupMultiStep([30, 50, 70], gamma=0.1, warmup_factor=0.1, warmup_epochs=10)
    by_epoch = {e: rule(e - 1) for e in range(1, 81)}  # epoch e (1-based) runs at last_epoch = e - 1
    assert [round(by_epoch[e], 6) for e in range(1, 12)] == [0.1, 0.19, 0.28, 0.37, 0.46, 0.55, 0.64, 0.73,
                                                             0.82, 0.91, 1.0]
    assert by_epoch[30] == pytest.approx(1.0) and by_epoch[31] == pytest.approx(0.1)
    assert by_epoch[50] == pytest.approx(0.1) and by_epoch[51] == pytest.approx(0.01)
    assert by_epoch[70] == pytest.approx(0.01) and by_epoch[71] == pytest.approx(0.001)
    assert by_epoch[80] == pytest.approx(0.001)


def test_scheduler_steps_per_epoch_and_round_trips_through_state_dict():
    cfg = get_default_config()
    model = NamedLikeTFCLIP()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[-1]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(5e-7) and lrs[1] == pytest.approx(0.19 * 5e-6) and lrs[10] == pytest.approx(5e-6)
    fresh_opt = build_optimizer(model, cfg)
    fresh = build_scheduler(fresh_opt, cfg)
    fresh.load_state_dict(scheduler.state_dict())
    assert fresh.last_epoch == 12
    with pytest.raises(ValueError, match="train.stepsize must be increasing"):
        WarmupMultiStep([50, 30])


def test_rules_reach_the_tfclip_modules_by_their_names():
    from tfclip_plugin.models import build_tfclip

    model = build_tfclip("tfclip_vit", num_classes=5, num_cameras=2, height=64, width=32, vision_width=64,
                         vision_layers=2, embed_dim=64)
    settings = parameter_settings(model, get_default_config())
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"bottleneck.bias", "bottleneck_proj.bias", "bottleneck_proj_temp.bias",
                      "bottleneck_proj_temp2.bias"} and not frozen & set(settings)
    for name, (lr, decay) in settings.items():
        expected = 5e-6 * (2 if "bias" in name else 1) * (10 if name.startswith(("ssp.", "temporal.")) else 1)
        expected *= 10 if "classifier_proj_temp" in name else 1
        assert lr == pytest.approx(expected) and decay == pytest.approx(1e-4), name
    assert any(n.startswith("ssp.") for n in settings) and any(n.startswith("temporal.") for n in settings)
    assert settings["classifier_proj_temp.weight"][0] == pytest.approx(5e-5)
    assert settings["backbone.visual.conv1.weight"][0] == pytest.approx(5e-6)


def test_image_recipes_give_clipreids_learning_rate_in_every_epoch():
    """CLIP-ReID steps WarmupMultiStepLR(steps [30, 50], factor 0.1, 10 warm-up epochs) at the start of each epoch
    (processor_clipreid_stage2.py:79), so epoch e runs at last_epoch e; our schedule steps after each epoch."""
    from bisect import bisect_right

    from tfclip_plugin.cli import merge_config_file

    def clipreid(epoch):
        warmup = 0.1 * (1 - epoch / 10) + epoch / 10 if epoch < 10 else 1.0
        return 5e-6 * warmup * 0.1 ** bisect_right([30, 50], epoch)

    for recipe in ("tfclip_vit_clipm_market1501", "tfclip_vit_clipm_ssp_msmt17"):
        cfg = get_default_config()
        merge_config_file(cfg, recipe)
        optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
        scheduler = build_scheduler(optimizer, cfg)
        for epoch in range(1, cfg.train.max_epoch + 1):
            assert optimizer.param_groups[0]["lr"] == pytest.approx(clipreid(epoch), rel=1e-9), (recipe, epoch)
            optimizer.step()
            scheduler.step()
