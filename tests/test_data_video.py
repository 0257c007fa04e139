import os.path as osp

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dataset_fixtures import write_corrupt_frame, write_mars
from tfclip_plugin import host
from tfclip_plugin.config import activated_config, get_default_config
from tfclip_plugin.data import (BadFrameError, DenseClipDataset, SequenceTransform, TrackletVideoDataset,
                                build_datamanager, build_video_datamanager, generate_synthvid)
from tfclip_plugin.data.frames import set_default_skip_bad_frames
from tfclip_plugin.data.transforms import build_sequence_transforms

_, TEST = build_sequence_transforms(8, 4, [])


@pytest.fixture(autouse=True)
def no_process_default():
    set_default_skip_bad_frames(None)
    yield
    set_default_skip_bad_frames(None)


def numbered_tracklet(folder, length, pid=0, camid=0):
    """PNG frames whose red channel is 8 x frame number (1-based)."""
    paths = []
    for f in range(1, length + 1):
        path = osp.join(str(folder), f"{pid}_{camid}_{f:03d}.png")
        Image.new("RGB", (4, 8), (8 * f, 0, 0)).save(path)
        paths.append(path)
    return (tuple(paths), pid, camid)


def numbers(clip):
    """Frame numbers of a uint8 clip of :func:`numbered_tracklet` frames."""
    assert clip.dtype == torch.uint8
    return [round(float(v) / 8) for v in clip[:, 0].float().mean(dim=(1, 2))]


def test_dense_chunks_of_many_tracklets_share_a_batch(tmp_path):
    tracklets = [numbered_tracklet(tmp_path, n, pid=i, camid=i % 2) for i, n in enumerate([3, 10, 27])]
    dataset = DenseClipDataset(tracklets, TEST, seq_len=8)
    assert len(dataset) == 7 and dataset.num_tracklets == 3
    assert dataset.tracklet_index.tolist() == [0, 1, 1, 2, 2, 2, 2]
    batch = next(iter(DataLoader(dataset, batch_size=4, num_workers=1)))
    assert batch["img"].shape == (4, 8, 3, 8, 4)
    assert batch["index"].tolist() == [0, 1, 1, 2] and batch["pid"].tolist() == [0, 1, 1, 2]
    assert batch["camid"].tolist() == [0, 1, 1, 0]
    assert numbers(batch["img"][0]) == [1, 2, 3, 1, 2, 3, 1, 2]
    assert numbers(batch["img"][2]) == [9, 10, 9, 10, 9, 10, 9, 10]
    assert numbers(dataset[6]["img"]) == [25, 26, 27, 25, 26, 27, 25, 26]


def test_dense_accepts_a_per_image_transform_and_rejects_empty_tracklets(tmp_path):
    _, torchreid_test = host.data.transforms.build_transforms(8, 4, transforms=None)
    dataset = DenseClipDataset([numbered_tracklet(tmp_path, 9)], torchreid_test)
    assert dataset[1]["img"].dtype == torch.float32  # torchreid's ToTensor + Normalize
    ours = DenseClipDataset([numbered_tracklet(tmp_path, 9)], TEST)[1]["img"]
    assert ours.dtype == torch.uint8
    torch.testing.assert_close(dataset[1]["img"], TEST.normaliser(ours))
    with pytest.raises(ValueError, match=r"tracklet 1 \(pid 4, camid 2\) has no frames"):
        DenseClipDataset([numbered_tracklet(tmp_path, 2), ((), 4, 2)], TEST)


def tracklet_dataset(tracklets, mode="query", **kwargs):
    return TrackletVideoDataset(tracklets, tracklets, tracklets, transform=TEST, mode=mode, seq_len=8,
                                sample_method="rrs", verbose=False, **kwargs)


def test_bad_frames_raise_an_error_naming_the_file(tmp_path):
    tracklet = numbered_tracklet(tmp_path, 10)
    write_corrupt_frame(tracklet[0][4])
    with pytest.raises(BadFrameError, match=f"cannot read frame {tracklet[0][4]}.*tfclip.skip_bad_frames"):
        tracklet_dataset([tracklet], skip_bad_frames=False)[0]  # RRS-test reads frames 0, 2, 4, ...
    missing = (tracklet[0][:3] + (osp.join(str(tmp_path), "gone.png"),), 0, 0)
    with pytest.raises(BadFrameError, match=r"absent on disk: .*gone.png"):
        DenseClipDataset([missing], TEST, skip_bad_frames=False)[0]


def test_skipping_bad_frames_uses_a_neighbour_warns_and_counts(tmp_path):
    tracklet = numbered_tracklet(tmp_path, 10)
    write_corrupt_frame(tracklet[0][4])
    dataset = tracklet_dataset([tracklet], skip_bad_frames=True)
    with pytest.warns(UserWarning, match=f"cannot read frame {tracklet[0][4]}.*using .*004.png instead"):
        clip = dataset[0]["img"]
    assert numbers(clip) == [1, 3, 4, 7, 9, 10, 10, 10]  # frame 5 (index 4) replaced by frame 4
    dataset[0]
    assert dataset.frame_reader.replaced == {tracklet[0][4]: 2} and dataset.frame_reader.num_replaced == 2
    for path in tracklet[0]:
        write_corrupt_frame(path)
    with pytest.raises(BadFrameError, match="no readable frame in the tracklet"):
        DenseClipDataset([tracklet], TEST, skip_bad_frames=True)[0]


def test_skip_bad_frames_default_comes_from_the_config(tmp_path):
    tracklet = numbered_tracklet(tmp_path, 3)
    cfg = get_default_config()
    cfg.tfclip.skip_bad_frames = True
    assert not tracklet_dataset([tracklet]).frame_reader.skip_bad_frames
    with activated_config(cfg):
        assert tracklet_dataset([tracklet]).frame_reader.skip_bad_frames
        assert DenseClipDataset([tracklet], TEST).frame_reader.skip_bad_frames
    set_default_skip_bad_frames(True)
    assert DenseClipDataset([tracklet], TEST).frame_reader.skip_bad_frames


@pytest.fixture(scope="module")
def reid_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid")
    generate_synthvid(str(root), seed=3, num_train_ids=8, num_test_ids=6, max_frames=14, num_junk=2,
                      num_distractors=2)
    write_mars(str(root), [(1, 1, 9), (1, 2, 5), (4, 3, 12), (4, 1, 8), (6, 2, 4), (6, 5, 10)],
               [(2, 1, 6), (2, 3, 7)], [0])
    return str(root)


def test_torchreid_video_data_manager_reads_synthvid_after_import(reid_root):
    import torchreid

    dm = torchreid.data.VideoDataManager(
        root=reid_root, sources="synthvid", height=32, width=16, batch_size_train=8, batch_size_test=5,
        workers=0, train_sampler="RandomIdentitySampler", num_instances=2, seq_len=8, sample_method="rrs",
        use_gpu=False,
    )
    batch = next(iter(dm.train_loader))
    assert batch["img"].shape == (8, 8, 3, 32, 16)
    pids = batch["pid"].view(4, 2)
    assert (pids[:, 0] == pids[:, 1]).all() and len(set(pids[:, 0].tolist())) == 4  # P=4 ids x K=2
    query = next(iter(dm.test_loader["synthvid"]["query"]))
    assert query["img"].shape == (5, 8, 3, 32, 16)
    assert dm.num_train_pids == 8 and dm.num_train_cams == 6


def config(root, **data):
    cfg = get_default_config()
    cfg.data.root, cfg.data.height, cfg.data.width, cfg.data.workers = root, 32, 16, 0
    cfg.data.sources = cfg.data.targets = ["synthvid"]
    cfg.train.batch_size, cfg.sampler.num_instances = 8, 4
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def test_build_datamanager_installs_sequence_transforms(reid_root):
    dm = build_datamanager(config(reid_root))
    assert isinstance(dm.transform_tr, SequenceTransform) and isinstance(dm.transform_te, SequenceTransform)
    assert dm.transform_tr.flip and dm.transform_tr.eraser is not None and dm.transform_te.eraser is None
    loaders = [dm.train_loader, *dm.test_loader["synthvid"].values()]
    assert [loader.dataset.transform for loader in loaders] == [dm.transform_tr, dm.transform_te, dm.transform_te]
    batch = next(iter(dm.train_loader))
    assert batch["img"].shape == (8, 8, 3, 32, 16) and batch["pid"].dtype == torch.int64
    assert len(set(batch["pid"].tolist())) == 2  # 2 ids x 4 tracklets
    query, gallery = dm.fetch_test_loaders("synthvid")
    assert all(item[1] != -1 for item in gallery) and any(item[1] == 0 for item in gallery)


def test_several_sources_keep_tracklet_sampling(reid_root):
    dm = build_datamanager(config(reid_root, sources=["synthvid", "mars"], targets=["mars"]))
    dataset = dm.train_loader.dataset
    assert isinstance(dataset, TrackletVideoDataset)  # torchreid's sum would be a plain VideoDataset
    assert dataset.transform is dm.transform_tr and dataset.sample_method == "rrs"
    assert dm.num_train_pids == 8 + 3 and {item[3] for item in dataset.train} == {0, 1}
    assert next(iter(dm.train_loader))["img"].shape == (8, 8, 3, 32, 16)


def test_build_datamanager_rejects_bad_settings_before_parsing(reid_root):
    with pytest.raises(ValueError, match=r"\['random_crop'\]"):
        build_datamanager(config(reid_root, transforms=["random_crop"]))
    with pytest.raises(ValueError, match="data.type must be one of video, image; got 'images'"):
        build_datamanager(config(reid_root, type="images"))
    with pytest.raises(ValueError, match="data.type must be 'video' for tracklet datasets; got 'image'"):
        build_video_datamanager(config(reid_root, type="image"))
    cfg = config(reid_root)
    cfg.video.sample_method = "dense"
    with pytest.raises(ValueError, match="video.sample_method must be one of rrs, evenly, random, all"):
        build_datamanager(cfg)
