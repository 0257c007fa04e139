"""The uint8 pipeline: datasets ship uint8 clips, BatchNormaliser makes the model input on the device, and the
result equals the per-frame Pillow + ToTensor + Normalize path it replaced, for the same seeds."""
import glob
import math
import os.path as osp
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dataset_fixtures import write_corrupt_frame
from tfclip_plugin.data import BadFrameError, BatchNormaliser, DenseClipDataset, FrameReader, generate_synthvid
from tfclip_plugin.data.frames import read_frame
from tfclip_plugin.data.transforms import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, RandomSizedErasing,
                                           build_normaliser, build_sequence_transforms)


# -------------------------------------------------------------------------- the path this pipeline replaced
def legacy_erase(frame: Image.Image, rng, at_size_position: bool, sl=0.02, sh=0.2, r=0.3, p=0.5) -> Image.Image:
    """The Pillow-space eraser as it was (AsuradaYuci/TF-CLIP utils/seqtransforms.py)."""
    if rng.uniform(0.0, 1.0) > p:
        return frame
    width, height = frame.size
    area = width * height
    while True:
        target = rng.uniform(sl, sh) * area
        aspect = rng.uniform(r, 1 / r)
        box_h = math.sqrt(target * aspect)
        box_w = math.sqrt(target / aspect)
        xe = rng.uniform(0, width - box_w)
        ye = rng.uniform(0, height - box_h)
        if xe + box_w <= width and ye + box_h <= height and xe > 0 and ye > 0:
            break
    x1, y1 = math.ceil(xe), math.ceil(ye)
    size = (math.floor(x1 + box_w) - x1, math.floor(y1 + box_h) - y1)
    colour = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
    erased = frame.copy()
    erased.paste(Image.new("RGB", size, colour), size if at_size_position else (x1, y1))
    return erased


def legacy_clip(paths, rng, height, width, mean=IMAGENET_MEAN, std=IMAGENET_STD, flip=False, erase=None):
    """Pillow decoding, resize, one flip coin, per-frame erasing, then ToTensor + Normalize frame by frame:
    float32 (T, 3, H, W). ``erase``: None, or at_size_position."""
    frames = []
    for path in paths:
        with Image.open(path) as image:
            frames.append(image.convert("RGB"))
    frames = [f if f.size == (width, height) else f.resize((width, height), Image.Resampling.BILINEAR)
              for f in frames]
    if flip and rng.random() < 0.5:
        frames = [f.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for f in frames]
    if erase is not None:
        frames = [legacy_erase(f, rng, erase) for f in frames]
    pixels = torch.from_numpy(np.stack([np.asarray(f, dtype=np.uint8) for f in frames]))
    clips = pixels.permute(0, 3, 1, 2).float().div_(255.0)
    return clips.sub_(torch.tensor(mean).view(1, 3, 1, 1)).div_(torch.tensor(std).view(1, 3, 1, 1))


@pytest.fixture(scope="module")
def jpeg_tracklets(tmp_path_factory):
    """synthvid tracklets of 64x32 JPEG frames (quality 90, rendered people, noise and blur)."""
    root = str(tmp_path_factory.mktemp("synth"))
    generate_synthvid(root, seed=5, num_train_ids=3, num_test_ids=1, max_frames=12, num_junk=0, num_distractors=0)
    folders = sorted(glob.glob(osp.join(root, "synthvid", "bbox_train", "*")))
    tracklets = []
    for folder in folders:
        files = sorted(glob.glob(osp.join(folder, "*.jpg")))
        tracklets.append(tuple(files[:8]))
    return tracklets


# -------------------------------------------------------------------------------------------- equality
@pytest.mark.parametrize("size", [(64, 32), (48, 24), (80, 40)])  # stored size, downscaled, upscaled
@pytest.mark.parametrize("names, erase", [([], None), (["random_flip"], None), (["random_flip", "random_erase"], False),
                                          (["random_erase"], True)])
def test_new_path_equals_the_pillow_path_for_the_same_seeds(jpeg_tracklets, size, names, erase):
    height, width = size
    train, _ = build_sequence_transforms(height, width, names, erase_at_size_position=bool(erase))
    reader = FrameReader(False)
    flipped = erased = 0
    for seed in range(12):
        paths = jpeg_tracklets[seed % len(jpeg_tracklets)]
        indices = [0, 1, 1, 3, 5, 5, 6, 7]  # repeated frames share one decoded tensor
        new_rng, old_rng = random.Random(seed), random.Random(seed)
        clip = train(reader.read(paths, indices), new_rng)
        assert clip.dtype == torch.uint8 and clip.shape == (8, 3, height, width)
        expected = legacy_clip([paths[i] for i in indices], old_rng, height, width, flip="random_flip" in names,
                               erase=erase if "random_erase" in names else None)
        assert torch.equal(train.normaliser(clip[None])[0], expected)  # bit for bit
        assert new_rng.getstate() == old_rng.getstate()  # the same draws, in the same order
        unflipped = train.pixels(reader.read(paths, [indices[0]])[0])
        flipped += int(not torch.equal(clip[0], unflipped) and torch.equal(clip[0].flip(-1), unflipped))
        erased += int(sum(bool((clip[i] != clip[i - 1]).any()) for i in (2, 5)))  # copies of one frame differ
    if "random_flip" in names and erase is None:
        assert 0 < flipped < 12
    if "random_erase" in names:
        assert erased > 0


def test_frames_as_images_arrays_or_tensors_give_the_same_clip(jpeg_tracklets):
    _, test = build_sequence_transforms(48, 24, [])
    paths = jpeg_tracklets[0][:3]
    images = [Image.open(path).convert("RGB") for path in paths]
    clip = test(images)
    assert clip.dtype == torch.uint8 and clip.shape == (3, 3, 48, 24) and clip.is_contiguous()
    assert torch.equal(test([np.asarray(image) for image in images]), clip)
    assert torch.equal(test(FrameReader(False).read(paths, range(3))), clip)
    assert torch.equal(test(images[1]), clip[1])  # one frame -> (3, H, W)
    with pytest.raises(ValueError, match=r"a frame must be uint8 \(3, H, W\) pixels.*got torch.float32"):
        test([torch.zeros(3, 48, 24)])


def test_erasing_in_place_on_uint8_equals_pillow_paste():
    for at_size_position in (False, True):
        eraser = RandomSizedErasing(p=1.0, at_size_position=at_size_position)
        for seed in range(20):
            frame = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 32, 3), dtype=np.uint8))
            expected = np.asarray(legacy_erase(frame, random.Random(seed), at_size_position, p=1.0))
            pixels = torch.from_numpy(np.array(frame)).permute(2, 0, 1).contiguous()
            eraser.erase_(pixels, random.Random(seed))
            np.testing.assert_array_equal(pixels.permute(1, 2, 0).numpy(), expected)
            np.testing.assert_array_equal(np.asarray(eraser(frame, random.Random(seed))), expected)


# ------------------------------------------------------------------------------------ the normaliser
def test_normaliser_equals_per_frame_to_tensor_and_normalize_in_every_chunking():
    pixels = torch.randint(0, 256, (3, 9, 3, 40, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = pixels.float().div(255.0).sub(torch.tensor(CLIP_MEAN).view(3, 1, 1)).div(
        torch.tensor(CLIP_STD).view(3, 1, 1))
    normaliser = BatchNormaliser(CLIP_MEAN, CLIP_STD)
    assert torch.equal(normaliser(pixels), expected)  # OpenCV's table look-up
    from tfclip_plugin.data import transforms

    for chunk in (1, 3 * 40 * 24 * 4, 10 ** 9):  # one element, 4 frames, the whole batch
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(transforms, "CPU_CHUNK_ELEMENTS", chunk)
            assert torch.equal(normaliser(pixels), expected)
            patch.setattr(transforms, "_cv2", None)  # the tensor operations
            assert torch.equal(normaliser(pixels), expected)
    for table, mean, std in zip(normaliser.tables(), CLIP_MEAN, CLIP_STD):
        assert table.shape == (1, 256) and table.dtype == np.float32
        np.testing.assert_array_equal(table[0], ((torch.arange(256).float() / 255 - mean) / std).numpy())
    channel_last = pixels.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    assert torch.equal(normaliser(channel_last), expected)
    assert torch.equal(normaliser(pixels, dtype=torch.bfloat16), expected.bfloat16())
    floats = torch.randn(2, 3, 4, 4)
    assert normaliser(floats) is floats  # normalised already (a per-image transform): passes
    assert normaliser(floats, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"uint8 pixels \(\.\.\., 3, H, W\) or normalised floats; got torch.int64"):
        normaliser(pixels.long())
    with pytest.raises(ValueError, match="data.norm_std needs 3 values"):
        build_normaliser(None, [0.5])
    assert build_normaliser(None, None) == BatchNormaliser(IMAGENET_MEAN, IMAGENET_STD)


def test_collate_without_workers_reuses_one_clip_buffer():
    from tfclip_plugin.engine.features import ReusedClipsCollate

    collate = ReusedClipsCollate()
    items = [{"img": torch.full((2, 3, 4, 4), i, dtype=torch.uint8), "index": i, "pid": 7, "camid": i % 2}
             for i in range(3)]
    batch = collate(items)
    assert batch["img"].shape == (3, 2, 3, 4, 4) and batch["img"].is_contiguous()
    assert batch["index"].tolist() == [0, 1, 2] and batch["camid"].tolist() == [0, 1, 0]
    assert [int(clip.max()) for clip in batch["img"]] == [0, 1, 2]
    pointer = batch["img"].data_ptr()
    last = collate(items[1:])
    assert last["img"].data_ptr() == pointer and [int(clip.max()) for clip in last["img"]] == [1, 2]
    floats = [dict(item, img=item["img"].float()) for item in items]
    assert collate(floats)["img"].dtype == torch.float32  # per-image transforms' float clips: torch's collate


def test_stream_reuses_one_cpu_buffer_and_takes_smaller_last_batches():
    stream = BatchNormaliser(CLIP_MEAN).stream("cpu")
    first = torch.randint(0, 256, (4, 2, 3, 8, 4), dtype=torch.uint8)
    out = stream(first)
    pointer = out.data_ptr()
    assert torch.equal(out, BatchNormaliser(CLIP_MEAN)(first))
    last = torch.randint(0, 256, (3, 2, 3, 8, 4), dtype=torch.uint8)
    out = stream(last)
    assert out.data_ptr() == pointer and out.shape == last.shape
    assert torch.equal(out, BatchNormaliser(CLIP_MEAN)(last))
    floats = torch.randn(1, 2, 3, 8, 4)
    assert stream(floats) is floats
    normaliser = BatchNormaliser()
    assert normaliser.stream("cpu") is normaliser.stream(torch.device("cpu"))  # one buffer per normaliser
    assert normaliser.stream("cpu") is not normaliser.stream("cpu", torch.bfloat16)
    assert build_sequence_transforms(8, 4, [])[1].normaliser is build_normaliser(None, None)  # shared buffers


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_normaliser_on_a_cuda_device_equals_the_cpu_bit_for_bit():
    pixels = torch.arange(256, dtype=torch.uint8).repeat(6 * 16).view(2, 3, 3, 64, 32)
    normaliser = BatchNormaliser()
    on_gpu = normaliser(pixels.pin_memory(), "cuda")
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), normaliser(pixels))
    assert torch.equal(normaliser.stream("cuda")(pixels).cpu(), normaliser(pixels))


# -------------------------------------------------------------------------------------------- decoding
def test_jpeg_frames_decode_to_pillows_pixels_and_other_formats_through_pillow(jpeg_tracklets, tmp_path):
    for path in jpeg_tracklets[0]:
        pixels = read_frame(path)
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, 64, 32)
        with Image.open(path) as image:
            np.testing.assert_array_equal(pixels.permute(1, 2, 0).numpy(), np.asarray(image.convert("RGB")))
    with Image.open(jpeg_tracklets[0][0]) as image:
        rgb = image.convert("RGB")
    for name, mode in (("grey.jpg", "L"), ("cmyk.jpg", "CMYK"), ("palette.png", "P"), ("rgba.png", "RGBA")):
        path = str(tmp_path / name)
        rgb.convert(mode).save(path)
        with Image.open(path) as image:
            expected = np.asarray(image.convert("RGB"))
        np.testing.assert_array_equal(read_frame(path).permute(1, 2, 0).numpy(), expected)


def test_unreadable_frames_raise_errors_naming_the_file(jpeg_tracklets, tmp_path):
    data = open(jpeg_tracklets[0][0], "rb").read()
    truncated = str(tmp_path / "truncated.jpg")
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    corrupt = str(tmp_path / "corrupt.jpg")
    write_corrupt_frame(corrupt)
    empty = str(tmp_path / "empty.png")
    open(empty, "wb").close()
    for path in (truncated, corrupt, empty):
        with pytest.raises(BadFrameError, match=f"cannot read frame {path}: "):
            read_frame(path)
    with pytest.raises(BadFrameError, match=f"absent on disk: {tmp_path}/gone.jpg"):
        read_frame(str(tmp_path / "gone.jpg"))
    paths = (jpeg_tracklets[0][0], truncated, jpeg_tracklets[0][2])
    with pytest.warns(UserWarning, match=f"cannot read frame {truncated}.*using {paths[0]} instead"):
        frames = FrameReader(True).read(paths, [1])
    assert torch.equal(frames[0], read_frame(paths[0]))


# ----------------------------------------------------------------------------------- datasets ship uint8
def test_dense_and_training_loaders_ship_uint8_clips(jpeg_tracklets):
    _, test = build_sequence_transforms(64, 32, [])
    dataset = DenseClipDataset([(paths, i, 0) for i, paths in enumerate(jpeg_tracklets)], test, seq_len=4)
    batch = next(iter(DataLoader(dataset, batch_size=3, num_workers=1)))
    assert batch["img"].dtype == torch.uint8 and batch["img"].shape == (3, 4, 3, 64, 32)
    assert torch.equal(test.normaliser(batch["img"][0]), legacy_clip(jpeg_tracklets[0][:4], None, 64, 32))


def test_seeded_training_items_equal_the_pillow_path(jpeg_tracklets):
    from tfclip_plugin.data import TrackletVideoDataset
    from tfclip_plugin.data.sampling import rrs_train_indices

    train, _ = build_sequence_transforms(64, 32, ["random_flip", "random_erase"])
    tracklets = [(paths, i, i % 2) for i, paths in enumerate(jpeg_tracklets)]
    dataset = TrackletVideoDataset(tracklets, tracklets, tracklets, transform=train, mode="train", seq_len=4,
                                   sample_method="rrs", verbose=False, skip_bad_frames=False)
    for seed in range(4):
        random.seed(seed)
        np.random.seed(seed)
        item = dataset[seed % len(tracklets)]
        assert item["img"].dtype == torch.uint8 and item["img"].shape == (4, 3, 64, 32)
        random.seed(seed)
        np.random.seed(seed)
        paths = tracklets[seed % len(tracklets)][0]
        indices = rrs_train_indices(len(paths), 4)
        expected = legacy_clip([paths[i] for i in indices], random, 64, 32, flip=True, erase=False)
        assert torch.equal(train.normaliser(item["img"]), expected)
