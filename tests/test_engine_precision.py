"""Inference precision: bf16 dense features rank synthvid as fp32 does; tfclip.test_precision resolution."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tfclip_plugin.config import get_default_config
from tfclip_plugin.data import DenseClipDataset, build_sequence_transforms, generate_synthvid
from tfclip_plugin.data.datasets.synthvid import SynthVid
from tfclip_plugin.engine.features import dense_tracklet_features
from tfclip_plugin.engine.mixins import ProtocolEvaluationMixin
from tfclip_plugin.evaluation import evaluate
from tfclip_plugin.models import build_tfclip

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _ranking(features, query, gallery):
    qf, gf = F.normalize(features[: len(query)], dim=1), F.normalize(features[len(query):], dim=1)
    return evaluate(qf, gf, [t[1] for t in query], [t[1] for t in gallery], [t[2] for t in query],
                    [t[2] for t in gallery], protocol="tfclip")


def test_bf16_features_rank_synthvid_as_fp32(tmp_path):
    generate_synthvid(str(tmp_path), num_train_ids=1, num_test_ids=12, max_frames=12, height=32, width=16)
    transform = build_sequence_transforms(64, 32, [], MEAN, STD)[1]
    data = SynthVid(root=str(tmp_path), transform=transform, verbose=False)
    torch.manual_seed(0)
    model = build_tfclip("tfclip_vit", 3, 6, height=64, width=32, vision_width=64, vision_layers=2,
                         embed_dim=64).eval()
    dataset = DenseClipDataset(data.query + data.gallery, transform, seq_len=4)
    with torch.no_grad():
        fp32, bf16 = (dense_tracklet_features(lambda clips, camids: model(clips, camids), dataset, 16,
                                              precision=precision, desc=precision) for precision in ("fp32", "bf16"))
    assert F.cosine_similarity(fp32, bf16, dim=1).min() > 0.999
    exact, fast = _ranking(fp32, data.query, data.gallery), _ranking(bf16, data.query, data.gallery)
    assert exact["num_valid_queries"] == fast["num_valid_queries"] == len(data.query)
    assert abs(exact["mAP"] - fast["mAP"]) <= 0.002  # 0.2 points
    assert abs(exact["cmc"][0] - fast["cmc"][0]) <= 1 / len(data.query)


class _Evaluator(ProtocolEvaluationMixin):
    use_gpu = False


@pytest.mark.parametrize("precision, test_precision, expected", [
    ("fp32", "", "fp32"), ("bf16", "", "bf16"), ("fp32", "bf16", "bf16"), ("bf16", "fp32", "fp32")])
def test_test_precision_defaults_to_the_training_precision(precision, test_precision, expected):
    cfg = get_default_config()
    cfg.tfclip.precision, cfg.tfclip.test_precision = precision, test_precision
    evaluator = _Evaluator()
    evaluator.setup_evaluation(cfg)
    assert evaluator.test_precision == expected


def test_unknown_test_precision_is_refused():
    cfg = get_default_config()
    cfg.tfclip.test_precision = "int8"
    with pytest.raises(ValueError, match=r"tfclip.test_precision must be '' \(= tfclip.precision\) or one of "
                                         r"fp32, bf16, fp16; got 'int8'"):
        _Evaluator().setup_evaluation(cfg)
