"""torchreid's FeatureExtractor on TF-CLIP checkpoints: the checkpoint's architecture, weights and CLIP-Memory,
one feature per image (one-frame clips, no camera embedding), and clear refusals."""
import os
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import tfclip_plugin
from tfclip_plugin import host, registry
from tfclip_plugin.files.checkpoint_file import load_checkpoint, save_checkpoint
from tfclip_plugin.config import activated_config, get_default_config
from tfclip_plugin.data import CLIP_MEAN, CLIP_STD, generate_synthvid
from tfclip_plugin.interop import build_from_checkpoint, checkpoint_architecture
from tfclip_plugin.models import build_tfclip

TRAIN_IDS = 6
TINY = {"vision_width": 64, "vision_layers": 2, "embed_dim": 64}


def tiny_config(root: str = "", save_dir: str = ""):
    cfg = get_default_config()
    cfg.model.name, cfg.model.pretrained = "tfclip_vit", False
    cfg.data.sources, cfg.data.targets, cfg.data.root = ["synthvid"], ["synthvid"], root
    cfg.data.height, cfg.data.width, cfg.data.workers, cfg.data.save_dir = 64, 32, 0, save_dir
    cfg.train.max_epoch, cfg.train.lr, cfg.train.stepsize, cfg.train.batch_size = 1, 3e-4, [1], 8
    cfg.test.ranks = [1]
    for key, value in TINY.items():
        setattr(cfg.tfclip, key, value)
    cfg.tfclip.warmup_epochs, cfg.tfclip.save_test_outputs = 1, False
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint path, synthvid root): a tiny TF-CLIP ViT trained one epoch by our engine (phase 1 + 2)."""
    from tfclip_plugin.engine.runner import run_experiment

    base = tmp_path_factory.mktemp("tfclip")
    root = str(base / "data")
    generate_synthvid(root, seed=0, num_train_ids=TRAIN_IDS, num_test_ids=4, max_frames=12, num_junk=1,
                      num_distractors=1)
    results = run_experiment(tiny_config(root, str(base / "run")))
    return results["checkpoint"], root


@pytest.fixture()
def crops(tmp_path):
    """Three saved person crops of different sizes (the extractor resizes them)."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(64, 32), (96, 40), (50, 30)]):
        path = str(tmp_path / f"crop{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def extractor(model_name="tfclip_vit", **kwargs):
    kwargs.setdefault("image_size", (64, 32))
    return host.FeatureExtractor(model_name=model_name, device="cpu", verbose=kwargs.pop("verbose", False), **kwargs)


def train_cameras(root: str) -> int:
    names = [n for d in os.listdir(os.path.join(root, "synthvid", "bbox_train"))
             for n in os.listdir(os.path.join(root, "synthvid", "bbox_train", d))]
    return len({re.match(r"\d{4}C(\d)T", n).group(1) for n in names})


def test_one_feature_per_saved_crop_as_one_frame_clips_without_camera(trained, crops):
    checkpoint, _ = trained
    fe = extractor(model_path=checkpoint)
    features = fe(crops)
    model = build_from_checkpoint(checkpoint).eval()
    images = torch.stack([fe.preprocess(Image.open(p).convert("RGB")) for p in crops])
    assert features.shape == (3, model.feature_dim) == (3, 64 + 64 + 64)
    with torch.no_grad():
        torch.testing.assert_close(features, model(images[:, None]), rtol=1e-5, atol=1e-5)
        with_camera = model(images[:, None], torch.zeros(3, dtype=torch.int64))
    assert not torch.allclose(features, with_camera, atol=1e-4)  # no camera id: no SIE row added
    torch.testing.assert_close(fe(crops[1]), features[1:2], rtol=1e-5, atol=1e-5)  # a single path


def test_extractor_holds_the_checkpoint_model_with_its_clip_memory(trained):
    checkpoint, root = trained
    model = extractor(model_path=checkpoint).model
    saved = load_checkpoint(checkpoint)["state_dict"]
    assert set(model.state_dict()) == set(saved)
    assert all(torch.equal(value, saved[key]) for key, value in model.state_dict().items())
    assert (model.num_classes, model.num_cameras) == (TRAIN_IDS, train_cameras(root))
    assert bool(model.memory_ready) and model.memory.shape == (TRAIN_IDS, 64) and model.memory.abs().sum() > 0
    arch = checkpoint_architecture(checkpoint)
    assert (arch.name, arch.height, arch.width, arch.from_config) == ("tfclip_vit", 64, 32, True)
    assert not model.training


def test_subclassed_extractor_finds_the_checkpoint_too(trained):
    class Extractor(host.FeatureExtractor):
        def __init__(self, path):
            super().__init__(model_name="tfclip_vit", model_path=path, image_size=(64, 32), device="cpu",
                             verbose=False)

    assert Extractor(trained[0]).model.num_classes == TRAIN_IDS


def test_verbose_extractor_measures_complexity_on_a_4d_batch(trained, capsys):
    fe = extractor(model_path=trained[0], verbose=True)
    printed = capsys.readouterr().out
    params = int(re.search(r"- params: ([\d,]+)", printed).group(1).replace(",", ""))
    flops = int(re.search(r"- flops: ([\d,]+)", printed).group(1).replace(",", ""))
    assert (params, flops) == host.utils.compute_model_complexity(fe.model, (1, 3, 64, 32))
    patch_embedding_macs = 64 * 3 * 16 * 16 * (4 * 2)  # width x 3x16x16 kernel x 4x2 patches
    assert flops > patch_embedding_macs and params > 0


def test_another_image_size_is_refused(trained):
    with pytest.raises(ValueError, match=r"was trained at 64x32 but FeatureExtractor resizes crops to 128x64; "
                                         r"pass image_size=\(64, 32\)"):
        extractor(model_path=trained[0], image_size=(128, 64))


def test_another_model_name_is_refused(trained):
    with pytest.raises(ValueError, match="holds a 'tfclip_vit' model; build it with model_name='tfclip_vit', "
                                         "not 'tfclip_rn50'"):
        extractor("tfclip_rn50", model_path=trained[0])


def test_other_normalisation_warns(trained):
    with pytest.warns(UserWarning, match=r"normalised with mean \[0.485, 0.456, 0.406\].*uses pixel_mean="):
        extractor(model_path=trained[0], pixel_mean=list(CLIP_MEAN), pixel_std=list(CLIP_STD))


def test_a_file_that_is_not_ours_is_refused(tmp_path):
    path = str(tmp_path / "official.pth")
    torch.save({"image_encoder.conv1.weight": torch.zeros(4, 3, 16, 16)}, path)
    with pytest.raises(ValueError, match=r"official\.pth: not a tfclip_plugin TF-CLIP checkpoint .*"
                                         r"load_official_checkpoint"):
        extractor(model_path=path)


def write_rn50_checkpoint(path: str, with_config: bool) -> torch.nn.Module:
    cfg = tiny_config()
    cfg.model.name = "tfclip_rn50"
    cfg.tfclip.vision_width, cfg.tfclip.vision_layers, cfg.tfclip.sie = 16, 1, False
    torch.manual_seed(0)
    model = build_tfclip("tfclip_rn50", 4, 1, height=64, width=32, **{k: cfg.tfclip[k] for k in ("vision_width",
                         "vision_layers", "embed_dim", "sie")})
    model.set_memory(torch.randn(4, 64))
    state = {"state_dict": model.state_dict(), "epoch": 1, "rank1": 0.0}
    if with_config:
        state["config"] = cfg.dump()
    save_checkpoint(state, path)
    return model.eval()


def test_cnn_checkpoint(tmp_path, crops):
    path = str(tmp_path / "rn50.pth.tar")
    model = write_rn50_checkpoint(path, with_config=True)
    fe = extractor("tfclip_rn50", model_path=path)
    images = torch.stack([fe.preprocess(Image.open(p).convert("RGB")) for p in crops])
    with torch.no_grad():
        torch.testing.assert_close(fe(crops), model(images), rtol=1e-5, atol=1e-5)
    assert fe.model.feature_dim == 64 + 64 and bool(fe.model.memory_ready)


def test_file_without_run_config_uses_the_active_config(tmp_path):
    path = str(tmp_path / "torchreid-style.pth.tar")
    write_rn50_checkpoint(path, with_config=False)
    cfg = tiny_config()
    cfg.tfclip.vision_width, cfg.tfclip.vision_layers, cfg.tfclip.sie = 16, 1, False
    with activated_config(cfg):
        assert extractor("tfclip_rn50", model_path=path).model.num_classes == 4
    with pytest.raises(ValueError, match=r"torchreid-style\.pth\.tar: TF-CLIP checkpoint does not match the model "
                                         r".*stores no run config.*set_active_config"):
        extractor("tfclip_rn50", model_path=path)  # default config: a full-width RN50


def test_without_checkpoint_the_model_is_built_at_the_extractor_size():
    cfg = tiny_config()
    with activated_config(cfg):
        fe = extractor(image_size=(96, 48))
    assert fe.model.backbone.image_size == (96, 48) and fe.model.num_classes == 1
    assert fe(torch.rand(2, 3, 96, 48)).shape == (2, 192)
    assert host.feature_extractor_arguments() is None


def test_a_registered_checkpoint_name_needs_no_call_stack_lookup(trained, crops, monkeypatch):
    checkpoint, _ = trained
    fallback = extractor(model_path=checkpoint)(crops)

    def no_stack_lookup():
        raise AssertionError("the registered route must not inspect the call stack")

    monkeypatch.setattr(host, "feature_extractor_arguments", no_stack_lookup)
    try:
        assert tfclip_plugin.register_checkpoint("tfclip_synthvid", checkpoint) == "tfclip_synthvid"
        built = host.models.build_model("tfclip_synthvid", num_classes=1)
        saved = load_checkpoint(checkpoint)["state_dict"]
        assert built.num_classes == TRAIN_IDS and all(torch.equal(v, saved[k]) for k, v in built.state_dict().items())
        features = extractor("tfclip_synthvid", model_path=checkpoint)(crops)
        torch.testing.assert_close(features, fallback, rtol=1e-5, atol=1e-5)
        assert tfclip_plugin.register_checkpoint("tfclip_synthvid", checkpoint)  # a name may be registered again
    finally:
        host.model_factory().pop("tfclip_synthvid", None)
        registry._CHECKPOINT_MODELS.pop("tfclip_synthvid", None)


def test_register_checkpoint_refuses_taken_names_and_bad_files(trained, tmp_path):
    with pytest.raises(ValueError, match="'osnet_x1_0' is already a torchreid model name; choose another name"):
        tfclip_plugin.register_checkpoint("osnet_x1_0", trained[0])
    with pytest.raises(FileNotFoundError, match="register_checkpoint: checkpoint not found: .*absent.pth"):
        tfclip_plugin.register_checkpoint("mine", str(tmp_path / "absent.pth"))
    other = str(tmp_path / "official.pth")
    torch.save({"image_encoder.conv1.weight": torch.zeros(4, 3, 16, 16)}, other)
    with pytest.raises(ValueError, match="not a tfclip_plugin TF-CLIP checkpoint"):
        tfclip_plugin.register_checkpoint("mine", other)
    assert "mine" not in host.model_factory()


def test_building_a_one_class_model_outside_the_extractor_warns(trained):
    class OwnInit(host.FeatureExtractor):
        """An extractor that builds and loads by name itself, without FeatureExtractor.__init__."""

        def __init__(self, path):
            self.model = host.models.build_model("tfclip_vit", num_classes=1, pretrained=False)
            host.load_pretrained_weights(self.model, path)

    expected = r"tfclip_vit built with num_classes=1 outside torchreid's FeatureExtractor.*register_checkpoint"
    with activated_config(tiny_config()):
        with pytest.warns(UserWarning, match=expected):
            OwnInit(trained[0])
        with pytest.warns(UserWarning, match=expected):
            host.models.build_model("tfclip_vit", num_classes=1, pretrained=False)  # a wrapper's own call
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert host.models.build_model("tfclip_vit", num_classes=5, pretrained=False).num_classes == 5
