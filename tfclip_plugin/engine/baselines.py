"""torchreid's video and image engines evaluated with the plugin's test sampling and protocol.

Training is torchreid's own (``loss.name`` softmax or softmax + triplet; for video the frames of a clip
flattened into a batch of images) on the plugin's loaders, whose uint8 clips and images are normalised on the
device first (the same ``BatchNormaliser`` as TF-CLIP's); a clip's test feature is torchreid's
``extract_features`` (frame features pooled by ``video.pooling_method``), averaged over dense chunks per tracklet
like TF-CLIP's; an image's is ``extract_features`` of the image, ranked under the same protocol as TF-CLIP's
image features.
"""
from __future__ import annotations

import torch
from yacs.config import CfgNode as CN

from .. import host
from .mixins import CheckpointMixin, DistributedMixin, ProtocolEvaluationMixin


def channel_last_memory(clips: torch.Tensor) -> torch.Tensor:
    """Clips (..., 3, H, W) with the same values and shape in channel-last memory (the strides of a (..., H, W, 3)
    array), what torch's ``channels_last`` is for 4-D batches."""
    return clips.movedim(-3, -1).contiguous().movedim(-1, -3)


class NormalisedTrainingInputMixin:
    """In front of a torchreid engine: the batch's clips (images) become normalised float32 on the device
    (``ProtocolEvaluationMixin.training_input``) before torchreid's ``parse_data_for_train`` (which flattens clips
    into frames); float batches pass unchanged."""

    def parse_data_for_train(self, data):
        return super().parse_data_for_train(dict(data, img=self.training_input(data["img"])))


class ChannelLastFramesMixin(NormalisedTrainingInputMixin):
    """For torchreid's video engines with loaders without workers (``data.workers 0``): their CNNs get the frames of
    training and test clips in channel-last memory, the layout of the float clips the plugin's loaders delivered
    before they shipped uint8 (a per-frame ToTensor permuted decoded (H, W, 3) frames, and torch's collation keeps
    that layout in the main process; with workers it collates into contiguous shared memory). A convolution's
    kernel, and so its float rounding, depends on the input's layout: with the same layout, seeded baseline runs
    (the demo's among them) train and test exactly as before; the values are the same either way."""

    def _frames_layout(self, clips: torch.Tensor) -> torch.Tensor:
        return channel_last_memory(clips) if self.cfg.data.workers == 0 else clips

    def training_input(self, clips: torch.Tensor) -> torch.Tensor:
        return self._frames_layout(super().training_input(clips))

    def encode_clips(self, clips: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        return super().encode_clips(self._frames_layout(clips), camids)


class VideoSoftmaxBaselineEngine(ChannelLastFramesMixin, CheckpointMixin, ProtocolEvaluationMixin,
                                 DistributedMixin, host.VideoSoftmaxEngine):
    """torchreid's ``VideoSoftmaxEngine`` (label-smoothed CE) under the plugin's protocol."""

    def __init__(self, datamanager, model, optimizer, scheduler, cfg: CN) -> None:
        super().__init__(datamanager, model, optimizer, scheduler=scheduler, use_gpu=cfg.use_gpu,
                         label_smooth=cfg.loss.softmax.label_smooth, pooling_method=cfg.video.pooling_method)
        self.setup_evaluation(cfg)


class VideoTripletBaselineEngine(ChannelLastFramesMixin, CheckpointMixin, ProtocolEvaluationMixin,
                                 DistributedMixin, host.VideoTripletEngine):
    """torchreid's ``VideoTripletEngine`` (CE + batch-hard triplet) under the plugin's protocol."""

    def __init__(self, datamanager, model, optimizer, scheduler, cfg: CN) -> None:
        super().__init__(datamanager, model, optimizer, margin=cfg.loss.triplet.margin,
                         weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x, scheduler=scheduler,
                         use_gpu=cfg.use_gpu, label_smooth=cfg.loss.softmax.label_smooth,
                         pooling_method=cfg.video.pooling_method)
        self.setup_evaluation(cfg)


class ImageSoftmaxBaselineEngine(NormalisedTrainingInputMixin, CheckpointMixin, ProtocolEvaluationMixin,
                                 DistributedMixin, host.ImageSoftmaxEngine):
    """torchreid's ``ImageSoftmaxEngine`` (label-smoothed CE) under the plugin's protocol."""

    def __init__(self, datamanager, model, optimizer, scheduler, cfg: CN) -> None:
        super().__init__(datamanager, model, optimizer, scheduler=scheduler, use_gpu=cfg.use_gpu,
                         label_smooth=cfg.loss.softmax.label_smooth)
        self.setup_evaluation(cfg)


class ImageTripletBaselineEngine(NormalisedTrainingInputMixin, CheckpointMixin, ProtocolEvaluationMixin,
                                 DistributedMixin, host.ImageTripletEngine):
    """torchreid's ``ImageTripletEngine`` (CE + batch-hard triplet) under the plugin's protocol."""

    def __init__(self, datamanager, model, optimizer, scheduler, cfg: CN) -> None:
        super().__init__(datamanager, model, optimizer, margin=cfg.loss.triplet.margin,
                         weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x, scheduler=scheduler,
                         use_gpu=cfg.use_gpu, label_smooth=cfg.loss.softmax.label_smooth)
        self.setup_evaluation(cfg)
