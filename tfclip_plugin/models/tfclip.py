"""The TF-CLIP model and its builder (``docs/models.md`` describes the architecture and the reference code).

One forward for both backbones. Per clip (B, T, 3, H, W):
- frames -> backbone (SIE camera row added to each frame's CLS token, ViT only) -> FrameTokens;
- f_cls = frame mean of the CLS feature (ViT: 768-d CLS after ln_post; CNN: 2048-d pooled layer4 map);
- f_proj = frame mean of the projected CLS (ViT: 512-d; CNN: the 1024-d attention-pool output);
- temporal: TMD (or TMC alone) on the detached tokens (frame and sequence features), or a Table 5 alternative on the
  per-frame projected CLS, or nothing ('tap');
- BNNecks (weight 1, bias 0 and frozen) and bias-free classifiers (std 0.001) per feature; the frame-level TMD
  head shares ``classifier_proj_temp`` with the sequence temporal head;
- V2M logits (training, when the CLIP-Memory is set): ``<f_proj, M + SSP(M, V)>``, a raw dot product, with V
  the frame mean of all projected tokens.

Eval output = the concatenation of the pre-BN features: ViT [f_cls | f_proj | temporal] (2048-d with TMD);
CNN [f_proj | temporal] (v and v-hat of the supplement, 2048-d with TMD); 'tap' drops the temporal part.

Text mode (``memory='text'``, CLIP-ReID, Syliz517/CLIP-ReID model/make_model_clipreid.py:52-153): the model also
holds ``text`` (``text.TextBranch``: learned identity prompts through CLIP's text encoder, frozen but for stage 1
of training) and the class table in ``memory`` holds the identities' text features (``set_memory``). Training
adds ``f_last`` (frame mean of the CLS token before the last block, ViT; of the average-pooled layer3 map, CNN)
as the first triplet feature, and the logits against the table are the image-to-text logits ``i2t_logits``
``<f_proj, T (+ SSP(T, V))>``. The eval feature always holds f_cls: CLIP-ReID's ``[img_feature |
img_feature_proj]`` (1280-d ViT-B/16, 3072-d RN50) with 'tap', plus the temporal part otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .backbone import Backbone, ResNetBackbone, build_backbone
from .clip_weights import load_clip_weights
from .options import ModelOptions, memory_mode
from .ssp import build_ssp
from .temporal import build_temporal
from .text import TextBranch, build_text_branch

ARCHITECTURES = {"tfclip_vit": "vit", "tfclip_rn50": "rn50"}
LOSSES = ("softmax", "triplet")


@dataclass
class TFCLIPOutput:
    """Training-mode output of ``TFCLIP.forward`` for clips.

    logits: sequence heads (B, C) in the order f_cls, f_proj, temporal (no temporal entry with 'tap').
    frame_logits: (B*T, C) frame-level TMD head, or None for the other temporal modules.
    features: pre-BN metric features [f_cls, f_proj, temporal]; text mode [f_last, f_cls, f_proj, temporal].
    v2m_logits: (B, C) against the CLIP-Memory, or None (tfclip.memory not 'clip', or the memory not set yet).
    i2t_logits: (B, C) image-to-text logits against the identities' text features, or None (tfclip.memory not
        'text', or the text features not set yet).
    """

    logits: List[Tensor]
    frame_logits: Optional[Tensor]
    features: List[Tensor]
    v2m_logits: Optional[Tensor]
    i2t_logits: Optional[Tensor] = None


def _bnneck(dim: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(dim)
    bn.bias.requires_grad_(False)
    return bn


def _classifier(dim: int, num_classes: int) -> nn.Linear:
    fc = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(fc.weight, std=0.001)
    return fc


class TFCLIP(nn.Module):
    """TF-CLIP on a CLIP visual backbone.

    ``forward(clips, camids=None)``: clips (B, T, 3, H, W), or frames (N, 3, H, W) taken as N clips of one
    frame; camids (B,) int64 training-camera indices for SIE (None: no camera embedding, e.g. torchreid's
    FeatureExtractor). Eval -> (B, feature_dim). Train -> ``TFCLIPOutput`` for clips; for frames, as
    torchreid's own models: the list of sequence-head logits (loss 'softmax') or (logits, features)
    (loss 'triplet'), so torchreid's frame-level video engines can train it.

    ``memory`` 'clip' | 'text' | 'none' (True/False = 'clip'/'none'); ``text``: the text branch, required in
    text mode (its width-``embed_dim`` output must match the backbone's) and refused otherwise. Its parameters
    are frozen here.
    """

    def __init__(self, backbone: Backbone, num_classes: int, num_cameras: int = 1, temporal: str = "tmd",
                 ssp: str = "paper", ssp_layers: int = 2, memory: Union[str, bool] = "clip", sie: bool = True,
                 sie_coe: float = 1.0, loss: str = "softmax", text: Optional[TextBranch] = None,
                 ssp_residual: str = "update") -> None:
        super().__init__()
        memory = memory_mode(memory)
        if (memory == "text") != (text is not None):
            raise ValueError("a text branch goes with tfclip.memory 'text' and only with it; got memory "
                             f"'{memory}' and {'a' if text is not None else 'no'} text branch")
        if text is not None and text.embed_dim != backbone.embed_dim:
            raise ValueError(f"the text branch projects to {text.embed_dim} dimensions but the visual tower to "
                             f"{backbone.embed_dim} (tfclip.embed_dim)")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss '{loss}'; expected one of {', '.join(LOSSES)}")
        if sie and isinstance(backbone, ResNetBackbone):
            raise ValueError("SIE adds the camera embedding to the ViT's CLS token; the CNN has none "
                             "(set tfclip.sie False for tfclip_rn50)")
        if sie and num_cameras < 1:
            raise ValueError(f"SIE needs at least one camera, got num_cameras={num_cameras}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_cameras = num_cameras
        self.embed_dim = backbone.embed_dim
        self.loss = loss
        self.sie_coe = sie_coe
        self.memory_mode = memory
        self.ssp_residual = ssp_residual
        self.cv_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(num_cameras, backbone.cls_dim), std=0.02)) \
            if sie else None
        self.temporal = build_temporal(temporal, backbone.token_dim, backbone.embed_dim)
        self.ssp = build_ssp(ssp, backbone.embed_dim, ssp_layers) if memory != "none" else None
        self.text = text.requires_grad_(False) if text is not None else None

        self.bottleneck = _bnneck(backbone.cls_dim)
        self.classifier2 = _classifier(backbone.cls_dim, num_classes)
        self.bottleneck_proj = _bnneck(backbone.embed_dim)
        self.classifier_proj = _classifier(backbone.embed_dim, num_classes)
        temporal_dim = self.temporal.out_dim if self.temporal is not None else 0
        if self.temporal is not None:
            self.bottleneck_proj_temp2 = _bnneck(temporal_dim)
            self.classifier_proj_temp = _classifier(temporal_dim, num_classes)
            if self.temporal.frame_level:
                self.bottleneck_proj_temp = _bnneck(temporal_dim)

        self.register_buffer("memory", torch.zeros(num_classes, backbone.embed_dim))
        self.register_buffer("memory_ready", torch.tensor(False))
        self.cls_in_test_feature = backbone.cls_in_test_feature or memory == "text"
        cls_dim = backbone.cls_dim if self.cls_in_test_feature else 0
        self.feature_dim = cls_dim + backbone.embed_dim + temporal_dim

    # ----------------------------------------------------------------------------------------------- inputs
    def _as_clips(self, clips: Tensor) -> Tensor:
        height, width = self.backbone.image_size
        if clips.dim() == 4:
            clips = clips.unsqueeze(1)
        if clips.dim() != 5 or clips.shape[2] != 3 or tuple(clips.shape[-2:]) != (height, width):
            raise ValueError(f"expected clips (B, T, 3, {height}, {width}) or frames (N, 3, {height}, {width}), "
                             f"got {tuple(clips.shape)}")
        return clips

    def _camera_offsets(self, camids: Optional[Tensor], batch: int, frames: int) -> Optional[Tensor]:
        """camids (B,) -> (B*T, width) SIE rows (frame b*T+t gets its clip's camera), or None."""
        if self.cv_embed is None or camids is None:
            return None
        camids = torch.as_tensor(camids, device=self.cv_embed.device)
        if camids.shape != (batch,) or camids.is_floating_point():
            raise ValueError(f"expected camids as {batch} integer camera indices (one per clip), "
                             f"got shape {tuple(camids.shape)} {camids.dtype}")
        low, high = int(camids.min()), int(camids.max())
        if low < 0 or high >= self.num_cameras:
            raise ValueError(f"camera id {low if low < 0 else high} is outside the SIE table of {self.num_cameras} "
                             f"training cameras (ids 0..{self.num_cameras - 1}; set tfclip.num_cameras)")
        rows = self.sie_coe * self.cv_embed[camids]
        return rows.repeat_interleave(frames, dim=0)

    # ---------------------------------------------------------------------------------------------- forward
    def _temporal(self, tokens: Tensor, frame_proj: Tensor, batch: int) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """-> (frame feature (B*T, D) or None, sequence feature (B, D) or None)."""
        if self.temporal is None:
            return None, None
        if self.temporal.frame_level:
            return self.temporal(tokens.detach().unflatten(0, (batch, -1)))
        return None, self.temporal(frame_proj)

    def forward(self, clips: Tensor, camids: Optional[Tensor] = None) -> Union[Tensor, TFCLIPOutput, Any]:
        frame_input = clips.dim() == 4
        clips = self._as_clips(clips)
        b, t = clips.shape[:2]
        inputs, offsets = clips.flatten(0, 1), self._camera_offsets(camids, b, t)
        text_training = self.training and self.memory_mode == "text"
        if text_training:  # CLIP-ReID's third triplet feature (model/make_model_clipreid.py:122,136)
            frames, penultimate = self.backbone.forward_with_penultimate(inputs, offsets)
        else:
            frames = self.backbone(inputs, offsets)
        f_cls = frames.cls.unflatten(0, (b, t)).mean(dim=1)
        frame_proj = self.backbone.project(frames.tokens[:, 0]).unflatten(0, (b, t))  # (B, T, E)
        f_proj = frame_proj.mean(dim=1)
        g_frame, g_seq = self._temporal(frames.tokens, frame_proj, b)

        if not self.training:
            parts = ([f_cls] if self.cls_in_test_feature else []) + [f_proj]
            return torch.cat(parts + ([g_seq] if g_seq is not None else []), dim=1)

        features = [f_cls, f_proj]
        if text_training:
            features.insert(0, penultimate.unflatten(0, (b, t)).mean(dim=1))
        logits = [self.classifier2(self.bottleneck(f_cls)), self.classifier_proj(self.bottleneck_proj(f_proj))]
        if g_seq is not None:
            features.append(g_seq)
            logits.append(self.classifier_proj_temp(self.bottleneck_proj_temp2(g_seq)))
        if frame_input:
            return logits if self.loss == "softmax" else (logits, features)
        frame_logits = self.classifier_proj_temp(self.bottleneck_proj_temp(g_frame)) if g_frame is not None else None
        table = self._v2m_logits(f_proj, frames.tokens, b) \
            if self.memory_mode != "none" and bool(self.memory_ready) else None
        text_mode = self.memory_mode == "text"
        return TFCLIPOutput(logits=logits, frame_logits=frame_logits, features=features,
                            v2m_logits=None if text_mode else table, i2t_logits=table if text_mode else None)

    def _v2m_logits(self, f_proj: Tensor, tokens: Tensor, batch: int) -> Tensor:
        """f_proj (B, E), tokens (B*T, L, D) -> (B, C) = <f_proj, M + SSP(M, V)> (+ <f_proj, M> with
        ``ssp_residual`` 'pre-release'), M the class table in ``memory`` (CLIP-Memory, or the identities' text
        features in text mode)."""
        memory = self.memory.to(f_proj.dtype)
        logits = base = f_proj @ memory.t()
        if self.ssp is not None:
            video = self.backbone.project(tokens.unflatten(0, (batch, -1)).mean(dim=1))  # (B, L, E)
            prompts = self.ssp(self.memory, video)
            logits = logits + torch.einsum("be,bce->bc", f_proj, prompts.to(f_proj.dtype))
            if self.ssp_residual == "pre-release":
                logits = logits + base  # 2M + delta, as the LS-VID / iLIDS-VID checkpoints' code
        return logits

    # ---------------------------------------------------------------------------------------------- memory
    def encode_for_memory(self, clips: Tensor) -> Tensor:
        """clips (B, T, 3, H, W) -> (B, E): projected CLS averaged over frames, without SIE (phase 1)."""
        if clips.dim() != 5:
            raise ValueError(f"expected clips (B, T, 3, H, W), got {tuple(clips.shape)}")
        clips = self._as_clips(clips)
        b, t = clips.shape[:2]
        frames = self.backbone(clips.flatten(0, 1))
        return self.backbone.project(frames.tokens[:, 0]).unflatten(0, (b, t)).mean(dim=1)

    def set_memory(self, memory: Tensor) -> None:
        """Install the class table (C, E) (stored fp32) and mark it ready: the CLIP-Memory, or in text mode the
        identities' text features (``identity_text_features``)."""
        if tuple(memory.shape) != tuple(self.memory.shape):
            raise ValueError(f"expected a class table (CLIP-Memory or text features) of shape "
                             f"{tuple(self.memory.shape)} (classes, embed_dim), got {tuple(memory.shape)}")
        with torch.no_grad():
            self.memory.copy_(memory.to(self.memory.device, torch.float32))
            self.memory_ready.fill_(True)

    # ------------------------------------------------------------------------------------------------ text
    def text_features(self, labels: Tensor) -> Tensor:
        """labels (B,) identity indices -> (B, E): the identities' learned prompts through the text encoder
        (CLIP-ReID's ``get_text=True``, model/make_model_clipreid.py:108-111). Text mode only."""
        if self.text is None:
            raise ValueError(f"text features need a model built with tfclip.memory 'text'; this one has "
                             f"'{self.memory_mode}'")
        labels = torch.as_tensor(labels, device=self.memory.device)
        if labels.dim() != 1 or labels.is_floating_point():
            raise ValueError(f"expected labels as a 1-D integer tensor, got shape {tuple(labels.shape)} {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}); got [{int(labels.min())}, "
                             f"{int(labels.max())}]")
        return self.text.text_features(labels)

    @torch.no_grad()
    def identity_text_features(self, batch_size: int = 64) -> Tensor:
        """(C, E): the text features of every identity, in label order, ``batch_size`` prompts per forward
        (CLIP-ReID processor/processor_clipreid_stage2.py:56-71); what ``set_memory`` stores in text mode."""
        labels = torch.arange(self.num_classes, device=self.memory.device)
        return torch.cat([self.text_features(chunk) for chunk in labels.split(batch_size)])


def build_tfclip(name: str, num_classes: int, num_cameras: int, pretrained: bool = False, height: int = 256,
                 width: int = 128, loss: str = "softmax", **options: Any) -> TFCLIP:
    """Build ``name`` ('tfclip_vit' | 'tfclip_rn50') with explicit model options (:class:`ModelOptions` fields
    as keywords; anything else is a ``TypeError`` listing the valid ones).

    ``pretrained`` loads ``clip_weights`` into the backbone, and in text mode into the text tower too (nothing
    happens when it is ''). For the CNN, SIE is off whatever ``sie`` says (it has no CLS token).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown TF-CLIP model '{name}'; expected one of {', '.join(ARCHITECTURES)}")
    opts = ModelOptions.from_kwargs(**options)
    arch = ARCHITECTURES[name]
    backbone = build_backbone(arch, height, width, opts.stride, opts.vision_width, opts.vision_layers, opts.embed_dim)
    text = build_text_branch(arch, num_classes, opts.text_width, opts.text_layers, backbone.embed_dim) \
        if opts.memory == "text" else None
    if pretrained and opts.clip_weights:
        load_clip_weights(backbone, opts.clip_weights, text)
    if opts.grad_checkpointing:
        backbone.set_grad_checkpointing(True)
    return TFCLIP(backbone, num_classes, num_cameras, temporal=opts.temporal, ssp=opts.ssp,
                  ssp_layers=opts.ssp_layers, memory=opts.memory, sie=opts.sie and arch == "vit",
                  sie_coe=opts.sie_coe, loss=loss, text=text, ssp_residual=opts.ssp_residual)
