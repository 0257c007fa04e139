from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tfclip_plugin.engine.losses import TFCLIPLoss


def smoothed_ce(logits: np.ndarray, labels: np.ndarray, eps: float = 0.1) -> float:
    """mean over rows of sum over classes of -((1-eps) onehot + eps/C) * log_softmax."""
    num_classes = logits.shape[1]
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    target = np.full_like(logits, eps / num_classes)
    target[np.arange(len(labels)), labels] += 1 - eps
    return float((-(target * log_p)).sum(1).mean())


def batch_hard_triplet(features: np.ndarray, labels: np.ndarray, margin: float = 0.3) -> float:
    losses = []
    for i in range(len(labels)):
        dist = np.sqrt(np.maximum(((features - features[i]) ** 2).sum(1), 1e-12))
        hardest_pos = dist[labels == labels[i]].max()
        hardest_neg = dist[labels != labels[i]].min()
        losses.append(max(0.0, hardest_pos - hardest_neg + margin))
    return float(np.mean(losses))


def make_output(rng, batch=8, num_classes=5, frames=4):
    def t(*shape):
        return torch.tensor(rng.normal(size=shape), dtype=torch.float32)

    return SimpleNamespace(
        logits=[t(batch, num_classes) for _ in range(3)],
        features=[t(batch, 6), t(batch, 4), t(batch, 6)],
        frame_logits=t(batch * frames, num_classes),
        v2m_logits=t(batch, num_classes) * 3,
    )


def test_total_loss_equals_the_reference_formula():
    rng = np.random.default_rng(0)
    out = make_output(rng)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 4, 4])
    y = pids.numpy()
    terms = TFCLIPLoss(num_classes=5)(out, pids)

    v2m = smoothed_ce(out.v2m_logits.numpy(), y)
    ids = sum(smoothed_ce(x.numpy(), y) for x in out.logits)
    tri = sum(batch_hard_triplet(f.numpy(), y) for f in out.features)
    frame = smoothed_ce(out.frame_logits.numpy(), np.repeat(y, 4)) / 4
    assert terms["loss_v2m"].item() == pytest.approx(v2m, rel=1e-5)
    assert terms["loss_id"].item() == pytest.approx(ids, rel=1e-5)
    assert terms["loss_tri"].item() == pytest.approx(tri, rel=1e-5)
    assert terms["loss_frame"].item() == pytest.approx(frame, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(1.0 * v2m + 0.25 * ids + 1.0 * tri + frame, rel=1e-5)


def test_frame_labels_repeat_each_tracklet_label_over_its_frames():
    # frame logits that are confident about label b for all T frames of tracklet b: tiny loss only if the
    # labels are repeated per tracklet (b, b, b, ...) and not tiled (0, 1, 0, 1, ...)
    pids = torch.tensor([0, 1])
    frame_logits = torch.full((6, 2), -20.0)
    frame_logits[:3, 0] = 20.0
    frame_logits[3:, 1] = 20.0
    loss = TFCLIPLoss(num_classes=2).frame_term(frame_logits, pids)
    assert loss.item() == pytest.approx(smoothed_ce(frame_logits.numpy(), np.array([0, 0, 0, 1, 1, 1])) / 3)
    assert loss.item() < 1.0


def test_missing_heads_contribute_zero_and_weights_apply():
    rng = np.random.default_rng(1)
    out = make_output(rng)
    out.v2m_logits, out.frame_logits = None, None
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    terms = TFCLIPLoss(num_classes=5, id_weight=0.5, triplet_weight=2.0)(out, pids)
    assert terms["loss_v2m"].item() == 0.0 and terms["loss_frame"].item() == 0.0
    assert terms["loss"].item() == pytest.approx(0.5 * terms["loss_id"].item() + 2.0 * terms["loss_tri"].item())
