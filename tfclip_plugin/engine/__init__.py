"""The two-phase TF-CLIP engine on torchreid's Engine, the baselines' engines, and the run entry points:
``build`` (model, weights, optimizer, engine from a config), ``runner`` (a run), ``recovery`` (``model.resume
auto`` and the commands that continue a stopped or failed run), ``demo``."""
from .baselines import VideoSoftmaxBaselineEngine, VideoTripletBaselineEngine
from .demo import run_demo
from .engine import TFCLIPEngine
from .losses import CrossRankTripletLoss, TFCLIPLoss
from .memory import build_clip_memory
from .mixins import CheckpointMixin, DistributedMixin, ProtocolEvaluationMixin
from .optim import build_optimizer, build_scheduler
from .recovery import EvaluationFailedError
from .runner import run_all_splits, run_experiment

__all__ = [
    "CheckpointMixin", "CrossRankTripletLoss", "DistributedMixin", "EvaluationFailedError", "ProtocolEvaluationMixin",
    "TFCLIPEngine",
    "TFCLIPLoss", "VideoSoftmaxBaselineEngine", "VideoTripletBaselineEngine", "build_clip_memory",
    "build_optimizer", "build_scheduler", "run_all_splits", "run_demo", "run_experiment",
]
