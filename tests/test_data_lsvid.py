import os
import os.path as osp

import h5py
import numpy as np
import pytest

from dataset_fixtures import write_lsvid
from tfclip_plugin import host
from tfclip_plugin.config import activated_config, get_default_config
from tfclip_plugin.data.datasets import LSVID, DatasetLayoutError
from tfclip_plugin.data.transforms import build_sequence_transforms

TRAIN = [(40, 11, 100), (3, 1, 20), (12, 15, 48), (3, 2, 150), (40, 7, 6)]
TEST = [(-1, 3, 9), (5, 1, 30), (5, 4, 12), (9, 2, 60), (9, 15, 7), (21, 8, 14), (5, 9, 5)]
QUERY_ROWS = [1, 3, 5]


def build(root, mode="train", **kwargs):
    _, test = build_sequence_transforms(8, 4, [])
    return host.data.datasets.init_video_dataset("lsvid", root=str(root), transform=test, mode=mode, seq_len=8,
                                                 sample_method="rrs", verbose=False, **kwargs)


def tree(root):
    return sorted(osp.join(d, f) for d, _, files in os.walk(root) for f in files)


@pytest.fixture(scope="module")
def lsvid_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid")
    return root, write_lsvid(str(root), TRAIN, TEST, QUERY_ROWS)


def test_training_pieces_of_48_frames_labels_and_cameras(lsvid_root):
    root, written = lsvid_root
    before = tree(root)
    dataset = build(root)
    assert type(dataset) is LSVID
    assert tree(root) == before  # no cache written into the dataset folder
    train = written["train"]
    expected = [
        (train[0][0][:48], 2, 10), (train[0][0][48:], 2, 10),  # 100 frames -> 48 + 52
        (train[1][0], 0, 0),  # 20 frames: kept whole (the reference drops it)
        (train[2][0], 1, 14),  # exactly 48
        (train[3][0][:48], 0, 1), (train[3][0][48:96], 0, 1), (train[3][0][96:], 0, 1),
        (train[4][0], 2, 6),
    ]
    assert [item[:3] for item in dataset.train] == expected
    assert dataset.num_train_pids == 3 and dataset.num_train_cams == 5


def test_whole_tracklets_from_argument_or_config(lsvid_root):
    root, written = lsvid_root
    whole = [(paths, label, cam - 1) for (paths, _, cam), label in zip(written["train"], [2, 0, 1, 0, 2])]
    assert [item[:3] for item in build(root, subtracklet_len=0).train] == whole
    cfg = get_default_config()
    cfg.tfclip.lsvid_subtracklet = 0
    with activated_config(cfg):
        assert [item[:3] for item in build(root).train] == whole
    assert len(build(root, subtracklet_len=30).train) == 3 + 1 + 1 + 5 + 1  # 100 -> 3 pieces, 20, 48, 150 -> 5, 6


def test_query_and_gallery_from_info_test_mat(lsvid_root):
    root, written = lsvid_root
    dataset = build(root, mode="query")
    test = written["test"]
    assert [item[:3] for item in dataset.query] == [(test[i][0], test[i][1], test[i][2] - 1) for i in QUERY_ROWS]
    gallery_rows = [2, 4, 6]  # row 0 is pid -1 (dropped), rows 1, 3, 5 are queries
    assert [item[:3] for item in dataset.gallery] == [(test[i][0], test[i][1], test[i][2] - 1) for i in gallery_rows]
    assert all(len(item[0]) == length for item, (_, _, length) in zip(dataset.query, [TEST[i] for i in QUERY_ROWS]))


def test_frames_are_sorted(lsvid_root):
    dataset = build(lsvid_root[0])
    paths = dataset.train[0][0]
    assert list(paths) == sorted(paths)
    assert osp.basename(paths[0]) == "0040_0001_11_0001_0001.jpg"


def test_reference_info_level_is_accepted(tmp_path):
    write_lsvid(str(tmp_path), TRAIN[:2], TEST[1:4], [0], extra_info_level=True, folder="lsvid")
    dataset = build(tmp_path)
    assert len(dataset.query) == 1 and len(dataset.gallery) == 2 and len(dataset.train) == 3


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DatasetLayoutError, match=f'"{tmp_path / "LS-VID"}"'):
        build(tmp_path)
    written = write_lsvid(str(tmp_path), TRAIN[:2], TEST[1:4], [0])
    os.remove(written["mat"])
    with pytest.raises(DatasetLayoutError, match=r"test/data/info_test.mat"):
        build(tmp_path)
    os.remove(osp.join(written["lists"], "list_seq_train.txt"))
    with pytest.raises(DatasetLayoutError, match=r"list_sequence/list_seq_train.txt\" or .*info/list_sequence"):
        build(tmp_path)


def test_bad_contents_are_named(tmp_path):
    written = write_lsvid(str(tmp_path), TRAIN[:2], TEST[1:4], [0])
    with h5py.File(written["mat"], "w") as f:
        f.create_dataset("query", data=np.asarray([[1.0, 9.0]]))
    with pytest.raises(ValueError, match=r"'query' of .*info_test.mat holds rows outside 1..3"):
        build(tmp_path)
    with h5py.File(written["mat"], "w") as f:
        f.create_dataset("queries", data=np.asarray([[1.0]]))
    with pytest.raises(ValueError, match=r"has no 'query' dataset \(found: \['queries'\]\)"):
        build(tmp_path)
    with h5py.File(written["mat"], "w") as f:
        f.create_dataset("query", data=np.asarray([[1.0]]))
    with open(osp.join(written["lists"], "list_seq_test.txt"), "a") as f:
        f.write("tracklet_test/none/0099_0001_02_0001_ 99\n")
    with pytest.raises(DatasetLayoutError, match=r"no frame starts with .*tracklet_test/none/0099_0001_02_0001_"):
        build(tmp_path)
    with open(osp.join(written["lists"], "list_seq_train.txt"), "a") as f:
        f.write("just-a-prefix\n")
    with pytest.raises(ValueError, match=r"list_seq_train.txt line 3 must read '<tracklet prefix> <pid>'"):
        build(tmp_path)


def test_camera_outside_1_to_15_is_named(tmp_path):
    write_lsvid(str(tmp_path), [(1, 16, 5)], TEST[1:4], [0])
    with pytest.raises(ValueError, match=r"camera 16 of .*0001_0001_16_0001_0001.jpg is outside 1..15"):
        build(tmp_path)
