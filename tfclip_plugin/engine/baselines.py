"""torchreid's video engines evaluated with the plugin's test sampling and protocol.

Training is torchreid's own (frames of a clip flattened into a batch of images, ``loss.name`` softmax or
softmax + triplet) on the plugin's loaders, whose uint8 clips are normalised on the device first (the same
``BatchNormaliser`` as TF-CLIP's); a clip's test feature is torchreid's ``extract_features`` (frame features
pooled by ``video.pooling_method``), averaged over dense chunks per tracklet like TF-CLIP's.
"""
from __future__ import annotations

from yacs.config import CfgNode as CN

from .. import host
from .mixins import CheckpointMixin, ProtocolEvaluationMixin


class NormalisedTrainingInputMixin:
    """In front of a torchreid video engine: the batch's clips become normalised float32 on the device
    (``ProtocolEvaluationMixin.training_input``) before torchreid flattens them into frames."""

    def parse_data_for_train(self, data):
        return super().parse_data_for_train(dict(data, img=self.training_input(data["img"])))


class VideoSoftmaxBaselineEngine(NormalisedTrainingInputMixin, CheckpointMixin, ProtocolEvaluationMixin,
                                 host.VideoSoftmaxEngine):
    """torchreid's ``VideoSoftmaxEngine`` (label-smoothed CE) under the plugin's protocol."""

    def __init__(self, datamanager, model, optimizer, scheduler, cfg: CN) -> None:
        super().__init__(datamanager, model, optimizer, scheduler=scheduler, use_gpu=cfg.use_gpu,
                         label_smooth=cfg.loss.softmax.label_smooth, pooling_method=cfg.video.pooling_method)
        self.setup_evaluation(cfg)


class VideoTripletBaselineEngine(NormalisedTrainingInputMixin, CheckpointMixin, ProtocolEvaluationMixin,
                                 host.VideoTripletEngine):
    """torchreid's ``VideoTripletEngine`` (CE + batch-hard triplet) under the plugin's protocol."""

    def __init__(self, datamanager, model, optimizer, scheduler, cfg: CN) -> None:
        super().__init__(datamanager, model, optimizer, margin=cfg.loss.triplet.margin,
                         weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x, scheduler=scheduler,
                         use_gpu=cfg.use_gpu, label_smooth=cfg.loss.softmax.label_smooth,
                         pooling_method=cfg.video.pooling_method)
        self.setup_evaluation(cfg)
