"""torchreid's own video engines train and test a tiny tfclip_vit as a plain frame backbone (what upstream
scripts/main.py does with ``model.name tfclip_vit``): built through torchreid's factory, one epoch of
VideoSoftmaxEngine / VideoTripletEngine on synthvid, evaluated by torchreid's ``engine.run(test_only=True)``."""
import os
import pickle
import re

import pytest
import torch

import tfclip_plugin  # noqa: F401  (registers tfclip_vit and synthvid into torchreid)
from tfclip_plugin import host
from tfclip_plugin.files.checkpoint_file import load_checkpoint
from tfclip_plugin.config import activated_config, get_default_config
from tfclip_plugin.data import generate_synthvid
from tfclip_plugin.interop import allow_torchreid_checkpoints, build_from_checkpoint

SEQ_LEN = 4
TINY = {"vision_width": 64, "vision_layers": 2, "embed_dim": 64}


@pytest.fixture(scope="module")
def reid_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid")
    # torchreid's evaluate_rank needs more than 50 gallery tracklets after its same-camera filter
    generate_synthvid(str(root), seed=1, num_train_ids=6, num_test_ids=24, min_frames=4, max_frames=8,
                      num_junk=1, num_distractors=2)
    return str(root)


def tiny_config():
    cfg = get_default_config()
    cfg.data.height, cfg.data.width = 64, 32
    for key, value in TINY.items():
        setattr(cfg.tfclip, key, value)
    return cfg


def results(printed: str):
    """(mAP, rank-1) of every '** Results **' block torchreid printed, in percent."""
    blocks = printed.split("** Results **")[1:]
    return [(float(re.search(r"mAP: ([\d.]+)%", b).group(1)), float(re.search(r"Rank-1\s*: ([\d.]+)%", b).group(1)))
            for b in blocks]


@pytest.mark.parametrize("loss", ["softmax", "triplet"])
def test_torchreid_video_engine_trains_and_tests_tfclip_vit(reid_root, tmp_path, capsys, loss):
    datamanager = host.VideoDataManager(
        root=reid_root, sources="synthvid", height=64, width=32, batch_size_train=8, batch_size_test=16, workers=0,
        train_sampler="RandomIdentitySampler", num_instances=4, seq_len=SEQ_LEN, sample_method="evenly",
        transforms=["random_flip"], use_gpu=False,
    )
    torch.manual_seed(0)
    with activated_config(tiny_config()):
        model = host.models.build_model("tfclip_vit", num_classes=datamanager.num_train_pids, loss=loss,
                                        pretrained=False, use_gpu=False)
    optimizer = host.build_optimizer(model, optim="adam", lr=3e-4)
    scheduler = host.build_lr_scheduler(optimizer, lr_scheduler="single_step", stepsize=20)
    engine_class = host.VideoSoftmaxEngine if loss == "softmax" else host.VideoTripletEngine
    engine = engine_class(datamanager, model, optimizer, scheduler=scheduler, use_gpu=False)
    classifier_before = model.classifier_proj.weight.detach().clone()
    assert not model.bottleneck.bias.requires_grad  # TF-CLIP's frozen BNNeck bias ...

    save_dir = str(tmp_path / "log")
    engine.run(save_dir=save_dir, max_epoch=1, print_freq=1, ranks=[1])
    printed = capsys.readouterr().out
    assert "loss_t" in printed if loss == "triplet" else "loss_t" not in printed
    steps = optimizer.state[model.classifier_proj.weight]["step"]
    assert int(steps) == len(datamanager.train_loader)
    assert not torch.equal(model.classifier_proj.weight, classifier_before)
    assert model.bottleneck.bias.requires_grad  # ... is opened by torchreid's Engine.train (open_all_layers)
    assert not bool(model.memory_ready) and not model.memory.any()  # no CLIP-Memory without our engine

    engine.run(save_dir=save_dir, test_only=True, ranks=[1])
    (trained_map, trained_rank1), (tested_map, tested_rank1) = results(printed + capsys.readouterr().out)
    assert (tested_map, tested_rank1) == (trained_map, trained_rank1)  # same weights, deterministic test clips
    assert 0.0 < tested_map <= 100.0

    query = next(iter(datamanager.test_loader["synthvid"]["query"]))["img"]
    model.eval()
    with torch.no_grad():
        pooled = engine.extract_features(query)  # frames -> features -> frame mean, torchreid's way
        clip = model(query)
    assert pooled.shape == clip.shape == (query.shape[0], 192)
    torch.testing.assert_close(pooled[:, :128], clip[:, :128], rtol=1e-4, atol=1e-5)  # CLS + projected means
    assert not torch.allclose(pooled[:, 128:], clip[:, 128:], atol=1e-3)  # TMD across frames only in clips

    checkpoint = os.path.join(save_dir, "model", "model.pth.tar-1")
    assert set(load_checkpoint(checkpoint)["state_dict"]) == set(model.state_dict())
    with activated_config(tiny_config()):
        rebuilt = build_from_checkpoint(checkpoint, name="tfclip_vit").eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(query), clip)
    assert_feature_extractor_reads_torchreid_checkpoints(checkpoint, model)


def assert_feature_extractor_reads_torchreid_checkpoints(checkpoint: str, model: torch.nn.Module) -> None:
    """torchreid's checkpoints hold rank1 as a numpy scalar, which torch >= 2.6's default torch.load refuses."""
    frames = torch.rand(3, 3, 64, 32)

    def extract():
        with activated_config(tiny_config()):
            fe = host.FeatureExtractor("tfclip_vit", model_path=checkpoint, image_size=(64, 32), device="cpu",
                                       verbose=False)
        return fe(frames)

    with pytest.raises(pickle.UnpicklingError, match="numpy"):
        extract()
    allowed = torch.serialization.get_safe_globals()
    try:
        allow_torchreid_checkpoints()
        with torch.no_grad():
            torch.testing.assert_close(extract(), model.eval()(frames))
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(allowed)
