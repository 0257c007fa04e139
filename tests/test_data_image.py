"""Image data: CLIP-ReID's transforms, timm's pixel erasing, torchreid's image datasets behind the plugin's
loaders, MSMT17 with the validation list, and the generated synthimg benchmark."""
import hashlib
import json
import os
import os.path as osp
import random
import re

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_fixtures import write_corrupt_frame, write_market1501, write_msmt17
from tfclip_plugin import host
from tfclip_plugin.config import get_default_config
from tfclip_plugin.data import (BadFrameError, CheckedImageDataset, ImageTransform, PixelErasing, build_datamanager,
                                build_image_transforms, generate_synthimg)
from tfclip_plugin.data.frames import read_frame

CLIPREID = ["resize_bicubic", "random_flip", "pad_crop", "random_erase_pixel"]
HALF = (0.5, 0.5, 0.5)


def random_image(height=80, width=41, seed=0):
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------- transforms
def test_clipreid_train_transform_equals_torchvision_and_timm_for_the_same_seeds():
    transforms = pytest.importorskip("torchvision.transforms")
    timm_erasing = pytest.importorskip("timm.data.random_erasing")
    reference = transforms.Compose([  # Syliz517/CLIP-ReID datasets/make_dataloader_clipreid.py:43-52
        transforms.Resize((64, 32), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(p=0.5), transforms.Pad(10), transforms.RandomCrop((64, 32)),
        transforms.ToTensor(), transforms.Normalize(HALF, HALF),
        timm_erasing.RandomErasing(probability=0.5, mode="pixel", max_count=1, device="cpu"),
    ])
    train, _ = build_image_transforms(64, 32, CLIPREID, HALF, HALF)
    image = random_image()
    flipped = erased = 0
    for seed in range(24):
        torch.manual_seed(seed)
        random.seed(seed)
        expected = reference(image)
        ours = train(image, rng=random.Random(seed), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(ours, expected), seed
        erased += int((ours.abs() > 1.0 + 1e-6).any())  # N(0, 1) noise leaves [-1, 1], pixels cannot
        flipped += int(torch.rand(1, generator=torch.Generator().manual_seed(seed)).item() < 0.5)
    assert 0 < erased < 24 and 0 < flipped < 24  # both branches of both coins were compared


def test_test_transform_is_bilinear_resize_and_normalisation():
    transforms = pytest.importorskip("torchvision.transforms")
    reference = transforms.Compose([transforms.Resize((64, 32)), transforms.ToTensor(),
                                    transforms.Normalize(HALF, HALF)])  # make_dataloader_clipreid.py:54-58
    _, test = build_image_transforms(64, 32, CLIPREID, HALF, HALF)
    image = random_image()
    assert torch.equal(test(image), reference(image))
    assert (test.resample, test.flip, test.padding, test.pixel_eraser) == ("bilinear", False, 0, None)


def test_names_select_the_steps_in_a_fixed_order():
    train, test = build_image_transforms(64, 32, ["random_erase_pixel", "pad_crop"])
    assert (train.resample, train.flip, train.padding, train.eraser) == ("bilinear", False, 10, None)
    assert train.pixel_eraser == PixelErasing()
    assert train.mean == test.mean == (0.485, 0.456, 0.406)  # ImageNet unless data.norm_mean says otherwise
    video_default, _ = build_image_transforms(64, 32, ["random_flip", "random_erase"])
    assert video_default.flip and video_default.eraser is not None and video_default.pixel_eraser is None
    bicubic, _ = build_image_transforms(64, 32, ["resize_bicubic"])
    image = random_image()
    expected = image.resize((32, 64), Image.Resampling.BICUBIC)
    assert torch.equal(bicubic.pixels(image), torch.from_numpy(np.array(expected)).permute(2, 0, 1))
    with pytest.raises(ValueError, match=r"unknown transform\(s\) \['random_crop'\] in data.transforms for image "
                                         r"data; known: resize_bicubic, random_flip, pad_crop"):
        build_image_transforms(64, 32, ["random_flip", "random_crop"])
    with pytest.raises(ValueError, match="data.norm_std needs 3 values"):
        build_image_transforms(64, 32, [], norm_std=[0.5])


def test_pad_crop_draws_every_window_of_the_zero_padded_image():
    transform = ImageTransform(40, 20, padding=10)
    image = Image.new("RGB", (20, 40), (200, 100, 50))
    generator = torch.Generator().manual_seed(0)
    windows = []
    for _ in range(6000):
        pixels = transform.pixels(image, generator=generator)
        inside = pixels[0] == 200
        rows, cols = inside.any(1).nonzero().flatten(), inside.any(0).nonzero().flatten()
        first_row, last_row, first_col, last_col = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        assert int(inside.sum()) == (last_row - first_row + 1) * (last_col - first_col + 1)
        assert int((pixels == 0).all(0).sum()) == 40 * 20 - int(inside.sum())  # the rest is zero padding
        top = 10 - first_row if first_row > 0 else 49 - last_row  # the window's corner in the 60 x 40 padded image
        left = 10 - first_col if first_col > 0 else 29 - last_col
        windows.append((top, left))
    assert len(set(windows)) == 21 * 21  # torchvision's RandomCrop: top, left uniform in 0..20
    counts = np.bincount([top for top, _ in windows], minlength=21)
    assert counts.min() > 220 and counts.max() < 350  # 6000 / 21 = 286 each


def test_pixel_erasing_statistics_and_geometry():
    eraser = PixelErasing()
    rng, generator = random.Random(7), torch.Generator().manual_seed(7)
    height, width, count = 64, 32, 4000
    images = torch.full((count, 3, height, width), 5.0)  # a value N(0, 1) noise never takes
    eraser(images, rng, generator)
    erased = images != 5.0
    changed = erased.any(1)
    assert torch.equal(erased, changed[:, None].expand_as(erased))  # all three channels of a pixel together
    hits = changed.flatten(1).any(1)
    assert abs(hits.float().mean().item() - 0.5) < 0.03  # probability 0.5
    areas, aspects = [], []
    for mask in changed[hits]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(mask.sum()) == h * w  # one rectangle (max_count 1)
        assert h < height and w < width  # strictly inside, as timm's check
        areas.append(h * w / (height * width))
        aspects.append(h / w)
    areas, aspects = np.array(areas), np.array(aspects)
    # area U[0.02, 1/3] and aspect log-U[0.3, 1/0.3] before rounding h and w to whole pixels
    assert areas.min() >= 0.02 * 0.75 and areas.max() <= 1 / 3 * 1.15
    assert aspects.min() >= 0.3 * 0.8 and aspects.max() <= 1 / 0.3 * 1.25
    assert areas.min() < 0.03 and areas.max() > 0.3 and aspects.min() < 0.4 and aspects.max() > 2.5
    noise = images[erased]
    assert abs(noise.mean().item()) < 0.01 and abs(noise.std().item() - 1.0) < 0.01  # per-pixel N(0, 1)
    again = torch.full((count, 3, height, width), 5.0)
    eraser(again, random.Random(7), torch.Generator().manual_seed(7))
    assert torch.equal(again, images)  # seeded draws repeat


def test_pixel_erasing_gives_up_after_ten_draws_that_do_not_fit():
    never_fits = PixelErasing(probability=1.0, min_area=0.9, max_area=0.95, min_aspect=3.0, max_aspect=3.5)
    image = torch.zeros(3, 8, 8)
    assert never_fits.rectangle(8, 8, random.Random(0)) is None
    assert torch.equal(never_fits(image, random.Random(0)), torch.zeros(3, 8, 8))


@pytest.mark.parametrize("names", [[], ["random_flip", "random_erase"], ["resize_bicubic", "random_flip", "pad_crop"],
                                   CLIPREID])
def test_loader_output_normalised_on_the_device_equals_the_float_path_for_the_same_seeds(tmp_path, names):
    """What the loaders ship (uint8 pixels from the JPEG decoder, or the pixel eraser's float images), after the
    engine's normaliser, equals the transform on Pillow's image for the same seeds, and draws as much randomness."""
    paths = []
    for index, (height, width) in enumerate([(64, 32), (80, 41), (48, 24)]):  # stored at the size, down, up
        paths.append(str(tmp_path / f"{index}.jpg"))
        random_image(height, width, seed=index).save(paths[-1], quality=90)
    train, test = build_image_transforms(64, 32, names, HALF, (0.25, 0.5, 0.75))
    for transform in (train, test):
        for seed in range(4):
            streams = [(random.Random(seed), torch.Generator().manual_seed(seed)) for _ in range(2)]
            expected = [transform(pillow_image(path), *streams[0]) for path in paths]
            shipped = [transform.loader_output(read_frame(path), *streams[1]) for path in paths]
            assert {item.dtype for item in shipped} == {torch.float32 if transform.pixel_eraser else torch.uint8}
            assert torch.equal(transform.normaliser(torch.stack(shipped)), torch.stack(expected))
            assert streams[0][0].getstate() == streams[1][0].getstate()
            assert torch.equal(streams[0][1].get_state(), streams[1][1].get_state())


def pillow_image(path):
    with Image.open(path) as image:
        return image.convert("RGB")


def test_normalisation_is_totensor_then_normalize():
    pixels = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(3, 16, 16)
    values = ImageTransform(16, 16, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).from_pixels(pixels)
    expected = (pixels.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    assert values.dtype == torch.float32 and torch.equal(values, expected)


# ------------------------------------------------------------------------------------------------ datasets
MARKET = {
    "bounding_box_train": [(2, 1), (2, 2), (7, 1), (7, 3), (7, 3), (-1, 2), (11, 6)],
    "query": [(3, 1), (5, 2), (-1, 4)],
    "bounding_box_test": [(3, 1), (3, 2), (5, 3), (5, 2), (0, 1), (0, 5), (-1, 1), (-1, 6)],
}


@pytest.fixture(scope="module")
def market_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("market"))
    return root, write_market1501(root, MARKET)


def image_config(root, sources=("market1501",), **data):
    cfg = get_default_config()
    cfg.data.type, cfg.data.root, cfg.data.height, cfg.data.width, cfg.data.workers = "image", root, 32, 16, 0
    cfg.data.sources = cfg.data.targets = list(sources)
    cfg.train.batch_size, cfg.sampler.num_instances, cfg.test.batch_size = 4, 2, 3
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def test_market1501_layout_parsed_by_torchreid_junk_dropped_distractors_kept(market_root):
    root, written = market_root
    dm = build_datamanager(image_config(root, transforms=CLIPREID, norm_mean=list(HALF), norm_std=list(HALF)))
    assert dm.data_type == "image" and dm.num_train_pids == 3 and dm.num_train_cams == 4
    train = dm.train_loader.dataset
    assert isinstance(train, CheckedImageDataset) and train.transform is dm.transform_tr
    assert dm.transform_tr.padding == 10 and dm.transform_tr.resample == "bicubic" and dm.transform_te.padding == 0
    assert len(train.train) == 6  # 7 listed, the junk image dropped
    assert sorted({pid for _, pid, _, _ in train.train}) == [0, 1, 2]  # relabelled (in torchreid's set order)
    cameras_per_person = sorted(sorted(cam for _, pid, cam, _ in train.train if pid == label) for label in range(3))
    assert cameras_per_person == [[0, 1], [0, 2, 2], [5]]  # persons 2, 7, 11; cameras 0-based
    query, gallery = dm.fetch_test_loaders("market1501")
    assert sorted(item[:3] for item in query) == sorted(written["query"])
    assert sorted(item[:3] for item in gallery) == sorted(written["bounding_box_test"])
    assert len(query) == 2 and len(gallery) == 6 and sum(item[1] == 0 for item in gallery) == 2
    for split in ("query", "gallery"):
        assert isinstance(dm.test_loader["market1501"][split].dataset, CheckedImageDataset)
    batch = next(iter(dm.train_loader))  # float32: timm's pixel eraser erases normalised images in the loader
    assert batch["img"].shape == (4, 3, 32, 16) and batch["img"].dtype == torch.float32
    assert set(batch) >= {"img", "pid", "camid"} and batch["camid"].max() < 6
    test_batch = next(iter(dm.test_loader["market1501"]["gallery"]))  # uint8, normalised on the device
    assert test_batch["img"].shape == (3, 3, 32, 16) and test_batch["img"].dtype == torch.uint8
    assert dm.transform_te.normaliser(test_batch["img"]).abs().max() <= 1.0  # mean/std 0.5


def test_unreadable_image_names_the_file(tmp_path):
    written = write_market1501(str(tmp_path), {"bounding_box_train": [(1, 1), (1, 2), (4, 1), (4, 2)],
                                               "query": [(2, 1)], "bounding_box_test": [(2, 2)]})
    bad = written["query"][0][0]
    write_corrupt_frame(bad)
    dm = build_datamanager(image_config(str(tmp_path)))
    with pytest.raises(BadFrameError, match=re.escape(bad)):
        next(iter(dm.test_loader["market1501"]["query"]))


def test_unknown_transform_fails_before_the_datasets_are_parsed(tmp_path):
    with pytest.raises(ValueError, match=r"\['random_crop'\]"):
        build_datamanager(image_config(str(tmp_path / "nothing-here"), transforms=["random_crop"]))


MSMT = {"train": [(0, 1), (0, 3), (1, 2), (1, 15)], "val": [(0, 4), (2, 5), (2, 6)],
        "query": [(3, 1), (4, 2)], "gallery": [(3, 7), (4, 9), (3, 1)]}


def test_msmt17_trainval_trains_on_the_train_and_validation_lists(tmp_path):
    written = write_msmt17(str(tmp_path), MSMT)
    kwargs = dict(root=str(tmp_path), mode="train", verbose=False)
    theirs = host.data.datasets.init_image_dataset("msmt17", **kwargs)
    ours = host.data.datasets.init_image_dataset("msmt17_trainval", **kwargs)
    assert len(theirs.train) == 4 and theirs.num_train_pids == 2
    assert [item[:3] for item in ours.train] == written["train"] + written["val"]
    assert ours.num_train_pids == 3 and ours.num_train_cams == 7  # cameras 1, 3, 2, 15, 4, 5, 6 -> 0-based
    assert ours.query == theirs.query and ours.gallery == theirs.gallery and len(ours.gallery) == 3
    combined = host.data.datasets.init_image_dataset("msmt17_trainval", combineall=True, **kwargs)
    reference = host.data.datasets.init_image_dataset("msmt17", combineall=True, **kwargs)
    assert combined.train == reference.train  # combineall: torchreid adds the validation list, once


# ------------------------------------------------------------------------------------------------ synthimg
SMALL = dict(num_train_ids=5, num_test_ids=4, num_cameras=4, max_cameras_per_id=3, max_images_per_camera=4,
             num_junk=3, num_distractors=2)
NAME = re.compile(r"^(\d{4}|-1)_c[1-6]s[1-6]_\d{6}_01\.jpg$")


def digest(folder):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            h.update(name.encode())
            with open(osp.join(d, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_synthimg_is_market1501_with_exact_counts(tmp_path):
    folder = generate_synthimg(str(tmp_path), seed=2, **SMALL)
    counts = json.load(open(osp.join(folder, "synthimg.json")))["counts"]
    market = osp.join(folder, "Market-1501-v15.09.15")
    listed = {split: sorted(os.listdir(osp.join(market, split)))
              for split in ("bounding_box_train", "query", "bounding_box_test")}
    assert all(NAME.match(name) for names in listed.values() for name in names)
    assert len(listed["bounding_box_train"]) == counts["train_images"]
    assert len(listed["query"]) == counts["query_images"]
    assert len(listed["bounding_box_test"]) == counts["gallery_images"] + counts["junk_images"]
    assert sum(n.startswith("-1_") for n in listed["bounding_box_test"]) == counts["junk_images"] == 3
    assert sum(n.startswith("0000_") for n in listed["bounding_box_test"]) == counts["distractor_images"] == 2

    dataset = host.data.datasets.init_image_dataset("synthimg", root=str(tmp_path), mode="train", verbose=False)
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (
        counts["train_images"], counts["query_images"], counts["gallery_images"])
    assert dataset.num_train_pids == counts["train_ids"] == 5
    assert [item[0] for item in dataset.train] == sorted(item[0] for item in dataset.train)
    assert sorted({item[1] for item in dataset.train}) == list(range(5))
    query_ids = {item[1] for item in dataset.query}
    gallery_ids = {item[1] for item in dataset.gallery}
    assert len(query_ids) == counts["test_ids"] == 4 and gallery_ids == query_ids | {0}
    for _, pid, cam, _ in dataset.query:  # one query per person and camera, a match in another camera
        assert sum(q[1] == pid and q[2] == cam for q in dataset.query) == 1
        assert any(g[1] == pid and g[2] != cam for g in dataset.gallery)
    with Image.open(dataset.train[0][0]) as image:
        assert image.size == (32, 64)


def test_synthimg_is_deterministic_by_seed_and_checks_its_sizes(tmp_path):
    assert digest(generate_synthimg(str(tmp_path / "a"), seed=5, **SMALL)) == \
        digest(generate_synthimg(str(tmp_path / "b"), seed=5, **SMALL))
    assert digest(generate_synthimg(str(tmp_path / "c"), seed=6, **SMALL)) != digest(str(tmp_path / "a" / "synthimg"))
    with pytest.raises(TypeError, match=r"unknown size argument\(s\) \['num_frames'\]"):
        generate_synthimg(str(tmp_path / "d"), num_frames=3)
    with pytest.raises(ValueError, match="num_cameras must lie in"):
        generate_synthimg(str(tmp_path / "d"), num_cameras=7)
    with pytest.raises(ValueError, match="min_images_per_camera"):
        generate_synthimg(str(tmp_path / "d"), min_images_per_camera=1)
