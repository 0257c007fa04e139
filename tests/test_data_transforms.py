import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from tfclip_plugin.data.transforms import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, RandomSizedErasing,
                                           SequenceTransform, build_sequence_transforms)


def half_image(size=(16, 32)):
    """Left half black, right half white (width 16, height 32)."""
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[:, size[0] // 2:] = 255
    return Image.fromarray(pixels)


def pixels_of(clip: torch.Tensor) -> np.ndarray:
    """uint8 (T, 3, H, W) -> (T, H, W, 3)."""
    assert clip.dtype == torch.uint8
    return clip.permute(0, 2, 3, 1).numpy()


def test_test_transform_resizes_bilinearly_and_the_normaliser_applies_imagenet_statistics():
    _, test = build_sequence_transforms(32, 16, [], None, None)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 21, 3), dtype=np.uint8))
    out = test([image, image])
    assert out.shape == (2, 3, 32, 16) and out.dtype == torch.uint8
    resized = np.asarray(image.resize((16, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(pixels_of(out)[0], resized)
    normalised = test.normaliser(out[None])[0]
    assert normalised.dtype == torch.float32
    expected = (resized.astype(np.float32) / 255 - np.asarray(IMAGENET_MEAN, np.float32)) \
        / np.asarray(IMAGENET_STD, np.float32)
    np.testing.assert_allclose(normalised[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert torch.equal(out, test([image, image]))  # deterministic
    assert test(image).shape == (3, 32, 16)  # a single image (torchreid's preprocess_pil_img)


def test_clip_statistics_are_an_option_and_match_open_clip():
    import open_clip

    assert CLIP_MEAN == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert CLIP_STD == pytest.approx(open_clip.OPENAI_DATASET_STD)
    _, test = build_sequence_transforms(8, 4, [], CLIP_MEAN, CLIP_STD)
    out = test.normaliser(test([Image.new("RGB", (4, 8), (255, 0, 128))]))
    expected = (torch.tensor([255, 0, 128]) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out[0, :, 3, 2], expected)


def test_one_flip_decision_per_tracklet():
    train, _ = build_sequence_transforms(32, 16, ["random_flip"])
    rng = random.Random(0)
    outcomes = set()
    for _ in range(40):
        frames = pixels_of(train([half_image()] * 8, rng))
        left_white = frames[:, :, 0, 0] == 255
        assert left_white.all() or not left_white.any()  # all frames flipped, or none
        outcomes.add(bool(left_white.all()))
    assert outcomes == {True, False}


def test_erasing_is_decided_per_frame_and_leaves_the_input_frames_untouched():
    train, _ = build_sequence_transforms(32, 16, ["random_erase"])
    grey = Image.new("RGB", (16, 32), (128, 128, 128))
    rng = random.Random(3)
    counts = []
    for _ in range(30):
        frames = pixels_of(train([grey] * 8, rng))
        counts.append(int(sum((frame != 128).any() for frame in frames)))
    assert any(0 < c < 8 for c in counts)  # some frames of a clip erased, others not
    assert 1.5 < np.mean(counts) < 6.5  # p = 0.5 per frame
    assert np.asarray(grey).min() == 128 == np.asarray(grey).max()


def expected_box(seed: int, width: int, height: int):
    """Replays the eraser's draws (AsuradaYuci/TF-CLIP utils/seqtransforms.py:92-137) with the same seed."""
    rng = random.Random(seed)
    assert rng.uniform(0, 1) <= 1.0
    area = width * height
    while True:
        target = rng.uniform(0.02, 0.2) * area
        aspect = rng.uniform(0.3, 1 / 0.3)
        h, w = math.sqrt(target * aspect), math.sqrt(target / aspect)
        xe, ye = rng.uniform(0, width - w), rng.uniform(0, height - h)
        if xe + w <= width and ye + h <= height and xe > 0 and ye > 0:
            break
    x1, y1 = math.ceil(xe), math.ceil(ye)
    size = (math.floor(x1 + w) - x1, math.floor(y1 + h) - y1)
    colour = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
    return (x1, y1), size, colour


@pytest.mark.parametrize("at_size_position", [False, True])
def test_erased_rectangle_position_and_colour(at_size_position):
    width, height = 64, 128
    for seed in range(5):
        (x1, y1), (w, h), colour = expected_box(seed, width, height)
        frame = Image.new("RGB", (width, height), (1, 2, 3))
        out = np.asarray(RandomSizedErasing(p=1.0, at_size_position=at_size_position)(frame, random.Random(seed)))
        x, y = (w, h) if at_size_position else (x1, y1)  # the reference pastes at the size (section 5.7)
        mask = np.zeros((height, width), bool)
        mask[y:y + h, x:x + w] = True
        assert (out[mask] == colour).all()
        assert (out[~mask] == (1, 2, 3)).all()
        assert np.asarray(frame).max() == 3


def test_train_transform_order_resize_flip_erase():
    train, _ = build_sequence_transforms(32, 16, ["random_flip", "random_erase"])
    assert train.flip and train.eraser == RandomSizedErasing(at_size_position=False)
    quirk, _ = build_sequence_transforms(32, 16, "random_erase", erase_at_size_position=True)
    assert not quirk.flip and quirk.eraser.at_size_position
    out = train([Image.new("RGB", (7, 9))] * 3, random.Random(0))
    assert out.shape == (3, 3, 32, 16)


def test_unknown_names_and_bad_statistics_are_rejected():
    with pytest.raises(ValueError, match=r"\['color_jitter'\].*random_flip, random_erase"):
        build_sequence_transforms(32, 16, ["random_flip", "color_jitter"])
    with pytest.raises(ValueError, match="data.norm_mean needs 3 values"):
        build_sequence_transforms(32, 16, [], [0.5], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="at least one frame"):
        SequenceTransform(8, 4)([])
