"""The two-phase TF-CLIP engine on torchreid's Engine, the baselines' engines and the run entry points."""
from .baselines import VideoSoftmaxBaselineEngine, VideoTripletBaselineEngine
from .engine import TFCLIPEngine
from .losses import TFCLIPLoss
from .memory import build_clip_memory
from .mixins import CheckpointMixin, ProtocolEvaluationMixin
from .optim import build_optimizer, build_scheduler
from .runner import run_all_splits, run_demo, run_experiment

__all__ = [
    "CheckpointMixin", "ProtocolEvaluationMixin", "TFCLIPEngine", "TFCLIPLoss", "VideoSoftmaxBaselineEngine",
    "VideoTripletBaselineEngine", "build_clip_memory", "build_optimizer", "build_scheduler", "run_all_splits",
    "run_demo", "run_experiment",
]
