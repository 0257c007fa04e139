"""torchreid's video and image engines evaluated with the plugin's test sampling and protocol.

Training is torchreid's own (``loss.name`` softmax or softmax + triplet; for video the frames of a clip
flattened into a batch of images); a clip's test feature is torchreid's ``extract_features`` (frame features
pooled by ``video.pooling_method``), averaged over dense chunks per tracklet like TF-CLIP's; an image's is
``extract_features`` of the image, ranked under the same protocol as TF-CLIP's image features.
"""
from __future__ import annotations

from yacs.config import CfgNode as CN

from .. import host
from .mixins import CheckpointMixin, DistributedMixin, ProtocolEvaluationMixin


class VideoSoftmaxBaselineEngine(CheckpointMixin, ProtocolEvaluationMixin, DistributedMixin, host.VideoSoftmaxEngine):
    """torchreid's ``VideoSoftmaxEngine`` (label-smoothed CE) under the plugin's protocol."""

    def __init__(self, datamanager, model, optimizer, scheduler, cfg: CN) -> None:
        super().__init__(datamanager, model, optimizer, scheduler=scheduler, use_gpu=cfg.use_gpu,
                         label_smooth=cfg.loss.softmax.label_smooth, pooling_method=cfg.video.pooling_method)
        self.setup_evaluation(cfg)


class VideoTripletBaselineEngine(CheckpointMixin, ProtocolEvaluationMixin, DistributedMixin, host.VideoTripletEngine):
    """torchreid's ``VideoTripletEngine`` (CE + batch-hard triplet) under the plugin's protocol."""

    def __init__(self, datamanager, model, optimizer, scheduler, cfg: CN) -> None:
        super().__init__(datamanager, model, optimizer, margin=cfg.loss.triplet.margin,
                         weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x, scheduler=scheduler,
                         use_gpu=cfg.use_gpu, label_smooth=cfg.loss.softmax.label_smooth,
                         pooling_method=cfg.video.pooling_method)
        self.setup_evaluation(cfg)


class ImageSoftmaxBaselineEngine(CheckpointMixin, ProtocolEvaluationMixin, DistributedMixin, host.ImageSoftmaxEngine):
    """torchreid's ``ImageSoftmaxEngine`` (label-smoothed CE) under the plugin's protocol."""

    def __init__(self, datamanager, model, optimizer, scheduler, cfg: CN) -> None:
        super().__init__(datamanager, model, optimizer, scheduler=scheduler, use_gpu=cfg.use_gpu,
                         label_smooth=cfg.loss.softmax.label_smooth)
        self.setup_evaluation(cfg)


class ImageTripletBaselineEngine(CheckpointMixin, ProtocolEvaluationMixin, DistributedMixin, host.ImageTripletEngine):
    """torchreid's ``ImageTripletEngine`` (CE + batch-hard triplet) under the plugin's protocol."""

    def __init__(self, datamanager, model, optimizer, scheduler, cfg: CN) -> None:
        super().__init__(datamanager, model, optimizer, margin=cfg.loss.triplet.margin,
                         weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x, scheduler=scheduler,
                         use_gpu=cfg.use_gpu, label_smooth=cfg.loss.softmax.label_smooth)
        self.setup_evaluation(cfg)
