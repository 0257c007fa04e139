import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tfclip_plugin.data.transforms import build_sequence_transforms
from tfclip_plugin.engine import memory as memory_module
from tfclip_plugin.engine.memory import (
    build_clip_memory, identity_means, load_cached_memory, memory_cache_key, store_cached_memory,
)


class MeanColourEncoder(nn.Module):
    """Stand-in for TFCLIP.encode_for_memory: a frame's feature is its mean RGB (x 10 + 1), averaged over T."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(1, 1)
        self.modes_seen = []

    def encode_for_memory(self, clips):
        self.modes_seen.append(self.training)
        return clips.mean(dim=(3, 4)).mean(dim=1) * 10 + 1  # (B, T, 3, H, W) -> (B, 3)


# the test transform of 4x2 frames without normalisation: grey level v -> v / 255
_, TO_TENSOR = build_sequence_transforms(4, 2, [], norm_mean=[0.0, 0.0, 0.0], norm_std=[1.0, 1.0, 1.0])


def write_tracklet(folder, values):
    """One frame per value: a 4x2 image filled with grey level `value`."""
    folder.mkdir(parents=True)
    paths = []
    for i, v in enumerate(values):
        path = folder / f"{i:03d}.png"
        Image.fromarray(np.full((4, 2, 3), v, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return tuple(paths)


def test_identity_means_are_plain_means_in_label_order():
    features = torch.tensor([[1.0, 0.0], [3.0, 2.0], [10.0, 10.0], [0.0, 4.0]])
    memory = identity_means(features, [1, 1, 0, 2], num_classes=3)
    assert torch.allclose(memory, torch.tensor([[10.0, 10.0], [2.0, 1.0], [0.0, 4.0]]))
    with pytest.raises(ValueError, match=r"labels without any training tracklet: \[1\]"):
        identity_means(features[:2], [0, 2], num_classes=3)
    with pytest.raises(ValueError, match=r"training labels must lie in \[0, 2\)"):
        identity_means(features[:2], [0, 2], num_classes=2)


def test_memory_is_mean_of_chunk_means_per_tracklet_then_mean_per_identity(tmp_path):
    # seq_len 4. Tracklet A (label 0): grey levels 0..9 -> chunks [0-3], [4-7], [8,9,8,9] (cyclic padding).
    # Tracklet B (label 0): 3 frames [30, 60, 90] -> one chunk [30,60,90,30].
    # Tracklet C (label 1): 4 frames of 51 -> one chunk.
    a = list(range(10))
    tracklets = [
        (write_tracklet(tmp_path / "a", a), 0, 0),
        (write_tracklet(tmp_path / "b", [30, 60, 90]), 0, 1),
        (write_tracklet(tmp_path / "c", [51] * 4), 1, 0),
    ]

    def feature(levels):  # the stand-in's chunk feature of grey levels
        return np.mean(levels) / 255.0 * 10 + 1

    track_a = np.mean([feature([0, 1, 2, 3]), feature([4, 5, 6, 7]), feature([8, 9, 8, 9])])
    track_b = feature([30, 60, 90, 30])
    track_c = feature([51] * 4)
    expected = torch.tensor([[(track_a + track_b) / 2] * 3, [track_c] * 3], dtype=torch.float32)

    model = MeanColourEncoder().train()
    memory = build_clip_memory(model, tracklets, TO_TENSOR, num_classes=2, seq_len=4, batch_size=2)
    assert memory.shape == (2, 3) and memory.dtype == torch.float32
    torch.testing.assert_close(memory, expected, rtol=1e-5, atol=1e-5)
    assert model.modes_seen and not any(model.modes_seen)  # eval mode while encoding
    assert model.training  # restored


def test_batch_size_does_not_change_the_memory(tmp_path):
    tracklets = [(write_tracklet(tmp_path / f"t{i}", list(range(i * 7, i * 7 + 5 + i))), i % 2, 0) for i in range(5)]
    one = build_clip_memory(MeanColourEncoder(), tracklets, TO_TENSOR, 2, seq_len=4, batch_size=1)
    many = build_clip_memory(MeanColourEncoder(), tracklets, TO_TENSOR, 2, seq_len=4, batch_size=7)
    torch.testing.assert_close(one, many)


def test_cache_key_depends_on_weights_tracklets_and_settings(tmp_path):
    model = MeanColourEncoder()
    tracklets = [(("a.png", "b.png"), 0, 0)]
    settings = {"height": 64, "width": 32}
    key = memory_cache_key(model, tracklets, settings)
    assert key == memory_cache_key(model, list(tracklets), dict(settings))
    assert key != memory_cache_key(model, [(("a.png", "c.png"), 0, 0)], settings)
    assert key != memory_cache_key(model, tracklets, {"height": 128, "width": 32})
    with torch.no_grad():
        model.backbone.weight.add_(1.0)
    assert key != memory_cache_key(model, tracklets, settings)

    assert load_cached_memory(str(tmp_path), key) is None
    stored = torch.randn(3, 4)
    path = store_cached_memory(str(tmp_path), key, stored, settings)
    assert path == memory_module.cached_memory_path(str(tmp_path), key)
    torch.testing.assert_close(load_cached_memory(str(tmp_path), key), stored)
