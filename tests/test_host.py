import subprocess
import sys
import textwrap

import torch

import tfclip_plugin
from tfclip_plugin import host
from tfclip_plugin.config import get_default_config, set_active_config


def test_import_registers_models_and_datasets():
    import torchreid

    factory = host.model_factory()
    assert factory is vars(torchreid.reid.models)["__model_factory"]
    assert {"tfclip_vit", "tfclip_rn50"} <= set(factory)
    assert {"lsvid", "synthvid", "mars", "ilidsvid", "prid2011"} <= set(host.video_dataset_registry())
    images = host.image_dataset_registry()
    assert images is vars(torchreid.reid.data.datasets)["__image_datasets"]
    assert {"synthimg", "msmt17_trainval", "market1501", "msmt17", "dukemtmcreid"} <= set(images)
    assert not set(images) & set(host.video_dataset_registry())


def test_second_registration_changes_nothing():
    factory_before = dict(host.model_factory())
    datasets_before = dict(host.video_dataset_registry())
    images_before = dict(host.image_dataset_registry())
    tfclip_plugin.register()
    import importlib

    importlib.reload(tfclip_plugin)
    assert host.model_factory() == factory_before
    assert host.video_dataset_registry() == datasets_before
    assert host.image_dataset_registry() == images_before
    assert host.register_image_dataset("synthimg", object) is False


def test_torchreid_build_model_builds_tfclip_from_active_config():
    cfg = get_default_config()
    cfg.data.height, cfg.data.width = 64, 32
    cfg.tfclip.vision_width, cfg.tfclip.vision_layers, cfg.tfclip.embed_dim = 64, 2, 64
    cfg.tfclip.num_cameras = 3
    set_active_config(cfg)
    try:
        model = host.models.build_model("tfclip_vit", num_classes=5, loss="softmax", pretrained=False, use_gpu=False)
    finally:
        set_active_config(None)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 3, 64, 32), torch.tensor([0, 2]))
    assert out.shape == (2, model.feature_dim)
    assert model.cv_embed.shape[0] == 3


UPSTREAM_SIMULATION = textwrap.dedent(
    """
    import sys, types
    import torchreid.reid as pypi
    upstream = types.ModuleType("torchreid")
    upstream.__path__ = []
    upstream.__version__ = "1.4.0"
    for name in ("data", "engine", "losses", "metrics", "models", "optim", "utils"):
        setattr(upstream, name, getattr(pypi, name))
        sys.modules["torchreid." + name] = getattr(pypi, name)
    sys.modules["torchreid"] = upstream
    del sys.modules["torchreid.reid"]
    import tfclip_plugin
    from tfclip_plugin import host
    assert host.LAYOUT == "upstream", host.LAYOUT
    import torchreid
    from torchreid.models import build_model  # upstream-style import
    factory = vars(torchreid.models)["__model_factory"]
    assert "tfclip_vit" in factory and "tfclip_rn50" in factory
    assert "lsvid" in vars(torchreid.data.datasets)["__video_datasets"]
    manager_cls = torchreid.data.VideoDataManager
    assert manager_cls is host.VideoDataManager
    print("upstream ok")
    """
)


def test_upstream_layout_is_supported():
    out = subprocess.run([sys.executable, "-c", UPSTREAM_SIMULATION], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "upstream ok" in out.stdout


def test_alias_upstream_modules_makes_upstream_imports_work():
    out = subprocess.run(
        [sys.executable, "-c",
         "from tfclip_plugin import host; host.alias_upstream_modules(); "
         "from torchreid.utils import FeatureExtractor; from torchreid.data import VideoDataset; print('ok')"],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
