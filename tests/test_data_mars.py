import os
import os.path as osp

import numpy as np
import pytest
from scipy.io import savemat

from dataset_fixtures import reference_mars_splits, write_mars
from tfclip_plugin import host
from tfclip_plugin.data.datasets import DatasetLayoutError, Mars
from tfclip_plugin.data.sampling import rrs_chunks
from tfclip_plugin.data.transforms import build_sequence_transforms

TRAIN = [(7, 1, 10), (1, 2, 5), (1, 3, 12), (3, 1, 3), (7, 6, 27), (3, 4, 8)]
TEST = [(-1, 1, 4), (-1, 3, 2), (0, 2, 6), (2, 1, 10), (2, 4, 7), (4, 2, 9), (4, 5, 3), (6, 3, 11), (6, 6, 8),
        (2, 2, 5)]
QUERY_ROWS = [3, 5, 7, 1]  # row 1 is junk and is dropped like every junk row


def build(root, mode="train", sample_method="rrs", **kwargs):
    _, test = build_sequence_transforms(8, 4, [])
    return host.data.datasets.init_video_dataset("mars", root=str(root), transform=test, mode=mode, seq_len=8,
                                                 sample_method=sample_method, verbose=False, **kwargs)


@pytest.fixture(scope="module")
def mars_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid")
    return root, write_mars(str(root), TRAIN, TEST, QUERY_ROWS)


def strip(items):
    return [(tuple(paths), int(pid), int(camid)) for paths, pid, camid, _ in items]


def test_registered_mars_is_the_corrected_class_and_parses_as_the_reference(mars_root):
    root, written = mars_root
    dataset = build(root)
    assert type(dataset) is Mars
    train, query, gallery = reference_mars_splits(written)
    assert strip(dataset.train) == train
    assert strip(dataset.query) == query
    assert strip(dataset.gallery) == gallery


def test_counts_labels_cameras_junk_and_distractors(mars_root):
    dataset = build(mars_root[0])
    assert dataset.num_train_pids == 3 and dataset.num_train_cams == 5
    assert len(dataset.train) == 6 and len(dataset.query) == 3 and len(dataset.gallery) == 5
    assert [item[1] for item in dataset.train] == [2, 0, 0, 1, 2, 1]  # pids 7, 1, 1, 3, 7, 3 -> ascending labels
    assert [item[2] for item in dataset.train] == [0, 1, 2, 0, 5, 3]  # cameras 1..6 -> 0..5
    assert [item[1] for item in dataset.query] == [2, 4, 6]
    gallery_pids = [int(item[1]) for item in dataset.gallery]
    assert gallery_pids == [0, 2, 4, 6, 2]  # distractor 0 kept, junk -1 dropped, queries removed
    assert all("00-1" not in item[0][0] for item in dataset.query + dataset.gallery)


def test_frames_follow_the_name_list(mars_root):
    dataset = build(mars_root[0])
    paths = dataset.train[4][0]
    assert [osp.basename(p) for p in paths] == [f"0007C6T0001F{f:03d}.jpg" for f in range(1, 28)]
    assert all(osp.isfile(p) for p in paths)


def frame_numbers(clip) -> list:
    """Frame numbers of a fixture clip (uint8): the blue channel holds 9 x frame number."""
    return [round(float(v) / 9) for v in clip[:, 2].float().mean(dim=(1, 2))]


def test_rrs_train_in_train_mode_and_rrs_test_in_query_and_gallery(mars_root):
    root = mars_root[0]
    train = build(root, mode="train")
    query = build(root, mode="query")
    item = query[0]  # pid 2, camera 1, 10 frames
    assert item["img"].shape == (8, 3, 8, 4) and (item["pid"], item["camid"]) == (2, 0)
    assert frame_numbers(item["img"]) == [1, 3, 5, 7, 9, 10, 10, 10]  # first frame of each RRS chunk
    table = rrs_chunks(27) + 1
    draws = [frame_numbers(train[4]["img"]) for _ in range(20)]  # 27 frames
    for numbers in draws:
        assert all(n in row for n, row in zip(numbers, table))
    assert len({tuple(d) for d in draws}) > 1  # random within the chunks


def test_torchreid_sample_methods_still_work(mars_root):
    evenly = build(mars_root[0], mode="gallery", sample_method="evenly")
    assert frame_numbers(evenly[1]["img"]) == [1, 2, 3, 4, 5, 6, 7, 7]  # 7 frames, last repeated
    with pytest.raises(ValueError, match="video.sample_method must be one of rrs, evenly, random, all"):
        build(mars_root[0], sample_method="dense")


def test_missing_layout_names_the_expected_file(tmp_path, mars_root):
    with pytest.raises(DatasetLayoutError, match=f'"{tmp_path / "mars"}"'):
        build(tmp_path)
    written = write_mars(str(tmp_path), TRAIN[:2], TEST[3:5], [0])
    os.remove(osp.join(written["dir"], "info", "query_IDX.mat"))
    with pytest.raises(DatasetLayoutError, match=r"info/query_IDX.mat"):
        build(tmp_path)


def test_missing_frame_folder_and_inconsistent_rows_are_named(tmp_path):
    written = write_mars(str(tmp_path), TRAIN[:2], TEST[3:5], [0])
    info = osp.join(written["dir"], "info")
    os.rename(osp.join(written["dir"], "bbox_test", "0002"), osp.join(written["dir"], "moved"))
    with pytest.raises(DatasetLayoutError, match=r'person folder ".*bbox_test/0002"'):
        build(tmp_path)
    os.rename(osp.join(written["dir"], "moved"), osp.join(written["dir"], "bbox_test", "0002"))
    savemat(osp.join(info, "tracks_train_info.mat"), {"track_train_info": np.asarray([[1, 99, 7, 1]], np.int32)})
    with pytest.raises(ValueError, match=r"tracks_train_info.mat point outside the 15 frame names"):
        build(tmp_path)
    savemat(osp.join(info, "tracks_train_info.mat"), {"track_train_info": np.asarray([[1, 10, 7, 9]], np.int32)})
    with pytest.raises(ValueError, match=r"inconsistent tracklet rows in .*tracks_train_info.mat"):
        build(tmp_path)


def test_empty_query_is_an_error_naming_the_files(tmp_path):
    write_mars(str(tmp_path), TRAIN[:2], TEST[:5], [0, 1])  # both query rows are junk
    with pytest.raises(ValueError, match=r"query or gallery \(info/query_IDX.mat\) split is empty.*tracks_test_info"):
        build(tmp_path)
