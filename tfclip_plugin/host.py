"""The one module that knows torchreid's internals.

torchreid ships in two layouts: PyPI 0.2.5 puts everything under ``torchreid.reid.*`` (and
``import torchreid.data`` fails there), upstream deep-person-reid 1.4 uses ``torchreid.*``.
Everything else in the plugin imports torchreid names from here, never from torchreid itself.
"""
from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Type

with warnings.catch_warnings():
    # "Cython evaluation ... unavailable": PyPI 0.2.5 cannot ship it; our evaluator is vectorised.
    warnings.filterwarnings("ignore", message="Cython evaluation")
    try:
        reid: ModuleType = importlib.import_module("torchreid.reid")
        LAYOUT = "pypi"
    except ImportError:
        reid = importlib.import_module("torchreid")
        LAYOUT = "upstream"

SUBMODULES = ("data", "engine", "losses", "metrics", "models", "optim", "utils")

data = reid.data
engine = reid.engine
losses = reid.losses
metrics = reid.metrics
models = reid.models
optim = reid.optim
utils = reid.utils

VideoDataset = data.VideoDataset
VideoDataManager = data.VideoDataManager
ImageDataset = data.ImageDataset
ImageDataManager = data.ImageDataManager
Engine = engine.Engine
VideoSoftmaxEngine = engine.VideoSoftmaxEngine
VideoTripletEngine = engine.VideoTripletEngine
ImageSoftmaxEngine = engine.ImageSoftmaxEngine
ImageTripletEngine = engine.ImageTripletEngine
RandomIdentitySampler = data.sampler.RandomIdentitySampler
Mars = data.datasets.Mars
iLIDSVID = data.datasets.iLIDSVID
PRID2011 = data.datasets.PRID2011
Market1501 = data.datasets.Market1501
MSMT17 = data.datasets.MSMT17
evaluate_rank = metrics.evaluate_rank
compute_distance_matrix = metrics.compute_distance_matrix
re_ranking = utils.re_ranking
visualize_ranked_results = utils.visualize_ranked_results
Logger = utils.Logger
collect_env_info = utils.collect_env_info
set_random_seed = utils.set_random_seed
load_pretrained_weights = utils.load_pretrained_weights
TripletLoss = losses.TripletLoss
CrossEntropyLoss = losses.CrossEntropyLoss
build_optimizer = optim.build_optimizer
build_lr_scheduler = optim.build_lr_scheduler
FeatureExtractor = utils.FeatureExtractor


def torchreid_version() -> str:
    """The installed torchreid version string."""
    return str(getattr(importlib.import_module("torchreid"), "__version__", "unknown"))


def model_factory() -> Dict[str, Callable]:
    """torchreid's model registry (the dict ``build_model`` reads at call time)."""
    return vars(models)["__model_factory"]


def video_dataset_registry() -> Dict[str, type]:
    """torchreid's video dataset registry."""
    return vars(data.datasets)["__video_datasets"]


def image_dataset_registry() -> Dict[str, type]:
    """torchreid's image dataset registry (Market-1501, MSMT17, DukeMTMC-reID, CUHK03, ...)."""
    return vars(data.datasets)["__image_datasets"]


def register_model(name: str, builder: Callable) -> bool:
    """Add ``builder`` under ``name`` unless the name exists; returns True if it was added."""
    factory = model_factory()
    if name in factory:
        return False
    factory[name] = builder
    return True


def register_video_dataset(name: str, cls: Type) -> bool:
    """Register a video dataset class unless the name exists; returns True if it was added."""
    if name in video_dataset_registry():
        return False
    data.register_video_dataset(name, cls)
    return True


def register_image_dataset(name: str, cls: Type) -> bool:
    """Register an image dataset class unless the name exists; returns True if it was added."""
    if name in image_dataset_registry():
        return False
    data.register_image_dataset(name, cls)
    return True


def replace_video_dataset(name: str, cls: Type) -> None:
    """Point a built-in dataset name (e.g. ``ilidsvid``) at a corrected subclass, once."""
    registry = video_dataset_registry()
    if registry.get(name) is not cls:
        registry[name] = cls


FEATURE_EXTRACTOR_ARGUMENTS = ("model_name", "model_path", "image_size", "pixel_mean", "pixel_std", "pixel_norm",
                               "device")


def feature_extractor_arguments() -> Optional[Dict[str, Any]]:
    """The arguments of the ``FeatureExtractor(...)`` being constructed further up the call stack, or None.

    ``FeatureExtractor.__init__`` calls ``build_model(model_name, num_classes=1, ...)`` before it loads
    ``model_path``, so a builder learns which weights will be loaded only from the constructor's frame,
    recognised by its code object (subclasses calling ``super().__init__`` are found too).
    """
    target = FeatureExtractor.__init__.__code__
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if frame.f_code is target:
                return {name: frame.f_locals.get(name) for name in FEATURE_EXTRACTOR_ARGUMENTS}
            frame = frame.f_back
        return None
    finally:
        del frame


def alias_upstream_modules() -> None:
    """Make ``torchreid.data``, ``torchreid.utils``, ... importable on the PyPI layout.

    Upstream scripts (``scripts/main.py``) do ``from torchreid.utils import ...``; on PyPI 0.2.5 those
    modules live under ``torchreid.reid``. This is a process-wide side effect, so only entry points
    that run upstream code call it; the importable library never does.
    """
    if LAYOUT != "pypi":
        return
    for name in SUBMODULES:
        sys.modules.setdefault(f"torchreid.{name}", getattr(reid, name))
