"""The phase-2 loss of TF-CLIP (AsuradaYuci/TF-CLIP ``processor/processor_clipreid_stage2.py``), and the
triplet loss over the global batch of a process group.

    L = w_v2m * CE(v2m logits) + w_id * sum_k CE(sequence head k) + w_tri * sum_k Tri(pre-BN feature k)
        + CE(frame head, labels repeated per frame) / T

CE is torchreid's label-smoothed cross-entropy (targets (1-eps) one-hot + eps/C, the reference's
``CrossEntropyLabelSmooth``); Tri is torchreid's batch-hard triplet loss (Euclidean, margin). Both are the
reference's definitions. The terms are computed in fp32 whatever the forward precision.

CLIP-ReID's stage-2 loss is the same combination (two ID heads, three triplet features, the image-to-text
logits ``f_proj @ text_features.T`` in place of the V2M logits, no frame head). Its stage-1 (prompt learning)
loss is :func:`image_text_contrastive_loss`, built on :class:`SupConLoss`.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import nn

from .. import host
from ..distributed import is_distributed, world_size


class TFCLIPLoss(nn.Module):
    """Combine a ``TFCLIPOutput``'s heads into the total loss and its terms.

    ``forward(output, pids)`` with ``output.logits`` k x (B, C), ``output.features`` k x (B, D_k),
    ``output.frame_logits`` (B*T, C) frame-major within each tracklet (or None), the logits against the class
    table ``output.v2m_logits`` (``table`` 'v2m') or ``output.i2t_logits`` (``table`` 'i2t', text mode), (B, C)
    or None, pids (B,). Returns ``{'loss', 'loss_v2m' | 'loss_i2t', 'loss_id', 'loss_tri', 'loss_frame'}``
    (absent terms are 0); ``v2m_weight`` weighs either table term.
    """

    def __init__(
        self,
        num_classes: int,
        label_smooth: float = 0.1,
        margin: float = 0.3,
        v2m_weight: float = 1.0,
        id_weight: float = 0.25,
        triplet_weight: float = 1.0,
        use_gpu: bool = False,
        table: str = "v2m",
    ) -> None:
        super().__init__()
        if table not in ("v2m", "i2t"):
            raise ValueError(f"table must be 'v2m' (CLIP-Memory) or 'i2t' (text features); got {table!r}")
        self.table = table
        self.cross_entropy = host.CrossEntropyLoss(num_classes, eps=label_smooth, use_gpu=use_gpu, label_smooth=True)
        self.triplet = host.TripletLoss(margin=margin)
        self.v2m_weight, self.id_weight, self.triplet_weight = v2m_weight, id_weight, triplet_weight

    def sequence_terms(self, logits: Sequence[torch.Tensor], features: Sequence[torch.Tensor], pids: torch.Tensor):
        """(sum of CE over the sequence heads, sum of triplet losses over the features)."""
        id_loss = sum(self.cross_entropy(x.float(), pids) for x in logits)
        tri_loss = sum(self.triplet(f.float(), pids) for f in features)
        return id_loss, tri_loss

    def frame_term(self, frame_logits: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        """CE of the frame head over B*T frames, divided by T (the reference's ``loss_frame / T``)."""
        num_frames = frame_logits.shape[0] // pids.shape[0]
        frame_pids = pids.repeat_interleave(num_frames)
        return self.cross_entropy(frame_logits.float(), frame_pids) / num_frames

    def forward(self, output, pids: torch.Tensor) -> Dict[str, torch.Tensor]:
        zero = pids.new_zeros((), dtype=torch.float32)
        id_loss, tri_loss = self.sequence_terms(output.logits, output.features, pids)
        table_logits = getattr(output, f"{self.table}_logits", None)
        table = self.cross_entropy(table_logits.float(), pids) if table_logits is not None else zero
        frame = self.frame_term(output.frame_logits, pids) if output.frame_logits is not None else zero
        total = self.v2m_weight * table + self.id_weight * id_loss + self.triplet_weight * tri_loss + frame
        return {"loss": total, f"loss_{self.table}": table, "loss_id": id_loss, "loss_tri": tri_loss,
                "loss_frame": frame}


class CrossRankTripletLoss(nn.Module):
    """A triplet loss over the global batch: each rank's features and labels are all-gathered (the features
    with torch's differentiable ``all_gather_single``, the replacement of the deprecated
    ``torch.distributed.nn.functional.all_gather``: its backward sums the gradients into each rank's rows) and
    ``triplet`` mines over all of them, so the loss and, after DistributedDataParallel's gradient averaging,
    its gradient equal those of one process holding the whole batch. Every rank must hold the same number of
    rows (the distributed samplers guarantee it).

    ``forward(features (B_local, D), pids (B_local,))`` -> scalar.
    """

    def __init__(self, triplet: nn.Module) -> None:
        super().__init__()
        self.triplet = triplet

    def forward(self, features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        if not is_distributed():
            return self.triplet(features, pids)
        all_features = funcol.all_gather_single(features.contiguous(), 0, dist.group.WORLD)
        all_pids = [torch.empty_like(pids) for _ in range(world_size())]
        dist.all_gather(all_pids, pids)
        return self.triplet(all_features, torch.cat(all_pids))


class SupConLoss(nn.Module):
    """CLIP-ReID's supervised contrastive loss (CLIP-ReID loss/supcontrast.py:10-30), computed in fp32.

    ``forward(anchors (B, D), contrasts (N, D), anchor_labels (B,), contrast_labels (N,))`` -> scalar

        L = -mean_i [ (1/|P(i)|) sum_{p in P(i)} log softmax_j(a_i . c_j / tau)_p ],  P(i) = {j: y_j = y_i}

    with unnormalised features and ``temperature`` tau (CLIP-ReID: 1.0). Every anchor needs a positive among
    the contrasts (the reference divides by zero otherwise).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, anchors: torch.Tensor, contrasts: torch.Tensor, anchor_labels: torch.Tensor,
                contrast_labels: torch.Tensor) -> torch.Tensor:
        positives = anchor_labels[:, None] == contrast_labels[None, :]  # (B, N)
        counts = positives.sum(dim=1)
        if not bool((counts > 0).all()):
            lonely = anchor_labels[counts == 0].unique().tolist()
            raise ValueError(f"SupConLoss: anchor labels {lonely} have no contrast with the same label")
        log_prob = (anchors.float() @ contrasts.float().t() / self.temperature).log_softmax(dim=1)
        return -((log_prob * positives).sum(dim=1) / counts).mean()


def image_text_contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                                temperature: float = 1.0) -> torch.Tensor:
    """CLIP-ReID's prompt-learning loss SupCon(V, T) + SupCon(T, V) for image and text features (B, D) of the
    same identities ``labels`` (B,) (CLIP-ReID processor/processor_clipreid_stage1.py:77-80)."""
    supcon = SupConLoss(temperature)
    return supcon(image_features, text_features, labels, labels) + supcon(text_features, image_features, labels, labels)
