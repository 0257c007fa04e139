import os
import os.path as osp

import numpy as np
import pytest
from scipy.io import savemat

from dataset_fixtures import write_ilidsvid, write_prid2011
from tfclip_plugin import host
from tfclip_plugin.data.datasets import PRID2011, DatasetLayoutError, iLIDSVID, iLIDSVIDTFCLIP
from tfclip_plugin.data.sampling import sliding_windows
from tfclip_plugin.data.transforms import build_sequence_transforms


def build(name, root, mode="train", **kwargs):
    _, test = build_sequence_transforms(8, 4, [])
    return host.data.datasets.init_video_dataset(name, root=str(root), transform=test, mode=mode, seq_len=8,
                                                 sample_method="rrs", verbose=False, **kwargs)


@pytest.fixture(scope="module")
def ilids300(tmp_path_factory):
    """300 persons (torchreid checks the count); a few long sequences, the rest 1-3 frames."""
    root = tmp_path_factory.mktemp("reid")
    rng = np.random.default_rng(1)
    lengths = [(int(rng.integers(1, 4)), int(rng.integers(1, 4))) for _ in range(300)]
    lengths[:3] = [(17, 9), (23, 12), (8, 30)]
    return root, write_ilidsvid(str(root), lengths)


@pytest.mark.parametrize("split_id", [0, 3])
def test_torchreid_protocol_with_sorted_frames(ilids300, split_id):
    root, written = ilids300
    dataset = build("ilidsvid", root, split_id=split_id)
    assert type(dataset) is iLIDSVID
    persons, frames, row = written["persons"], written["frames"], written["ls_set"][split_id] - 1
    train_persons = [persons[i] for i in sorted(row[150:])]
    test_persons = [persons[i] for i in sorted(row[:150])]
    assert [item[:3] for item in dataset.train] == [
        (frames[(p, cam)], pid, cam - 1) for pid, p in enumerate(train_persons) for cam in (1, 2)]
    assert [item[:3] for item in dataset.query] == [(frames[(p, 1)], pid, 0) for pid, p in enumerate(test_persons)]
    assert [item[:3] for item in dataset.gallery] == [(frames[(p, 2)], pid, 1) for pid, p in enumerate(test_persons)]
    assert dataset.num_train_pids == 150 and dataset.num_train_cams == 2
    assert not osp.exists(osp.join(written["dir"], "others"))  # no optical flow needed


def test_split_out_of_range(ilids300):
    with pytest.raises(ValueError, match="split_id exceeds range"):
        build("ilidsvid", ilids300[0], split_id=10)
    with pytest.raises(ValueError, match=r"split_id must lie in \[0, 9\]"):
        build("ilidsvid_tfclip", ilids300[0], split_id=10)


def windows(paths, pid, camid):
    return [(paths[a:b], pid, camid) for a, b in sliding_windows(len(paths), 8, 4)]


@pytest.mark.parametrize("split_id", [0, 7])
def test_reference_variant_swaps_halves_and_uses_8_frame_windows(ilids300, split_id):
    root, written = ilids300
    before = sorted(os.listdir(written["dir"]))
    dataset = build("ilidsvid_tfclip", root, split_id=split_id)
    assert type(dataset) is iLIDSVIDTFCLIP
    assert sorted(os.listdir(written["dir"])) == before  # nothing written
    persons, frames, row = written["persons"], written["frames"], written["ls_set"][split_id] - 1
    train_persons = [persons[i] for i in sorted(row[:150])]
    test_persons = [persons[i] for i in sorted(row[150:])]
    assert [item[:3] for item in dataset.train] == [
        w for pid, p in enumerate(train_persons) for cam in (1, 2) for w in windows(frames[(p, cam)], pid, cam - 1)]
    assert [item[:3] for item in dataset.query] == [
        w for pid, p in enumerate(test_persons) for w in windows(frames[(p, 1)], pid, 0)]
    assert [item[:3] for item in dataset.gallery] == [
        w for pid, p in enumerate(test_persons) for w in windows(frames[(p, 2)], pid, 1)]
    assert dataset.num_train_pids == 150
    standard = build("ilidsvid", root, split_id=split_id)
    assert {item[0][0].split(os.sep)[-2] for item in dataset.train} == {
        item[0][0].split(os.sep)[-2] for item in standard.query}  # the halves are swapped


def test_windows_of_long_sequences(ilids300):
    root, written = ilids300
    dataset = build("ilidsvid_tfclip", root)
    person = written["persons"][0]  # 17 cam1 frames -> windows at 0, 4, 8; 9 cam2 frames -> one at 0
    items = [item for item in dataset.train + dataset.query + dataset.gallery
             if osp.basename(osp.dirname(item[0][0])) == person]
    spans = sorted((item[2], len(item[0]), item[0][0]) for item in items)
    cam1 = written["frames"][(person, 1)]
    assert [s for s in spans if s[0] == 0] == [(0, 8, cam1[0]), (0, 8, cam1[4]), (0, 8, cam1[8])]
    assert [s[:2] for s in spans if s[0] == 1] == [(1, 8)]


def test_layout_errors_name_the_path_and_nothing_is_downloaded(tmp_path):
    with pytest.raises(DatasetLayoutError, match=f'"{tmp_path / "ilids-vid"}"'):
        build("ilidsvid", tmp_path)
    assert not osp.exists(tmp_path / "ilids-vid")
    written = write_ilidsvid(str(tmp_path), [(3, 3)] * 6)
    mat = osp.join(written["dir"], "train-test people splits", "train_test_splits_ilidsvid.mat")
    with pytest.raises(ValueError, match=r"must hold 'ls_set' \(10 rows of 300"):
        build("ilidsvid", tmp_path)  # torchreid's protocol needs the 300 persons
    assert len(build("ilidsvid_tfclip", tmp_path).train) == 6  # 3 persons x 2 cameras, one window each
    os.remove(mat)
    for name in ("ilidsvid", "ilidsvid_tfclip"):
        with pytest.raises(DatasetLayoutError, match="train_test_splits_ilidsvid.mat"):
            build(name, tmp_path)


def test_empty_person_folder_and_bad_split_matrix(tmp_path):
    written = write_ilidsvid(str(tmp_path), [(3, 3)] * 6)
    mat = osp.join(written["dir"], "train-test people splits", "train_test_splits_ilidsvid.mat")
    savemat(mat, {"ls_set": np.arange(1, 13, dtype=np.float64).reshape(2, 6) * 2})
    with pytest.raises(ValueError, match=r"indexes persons outside 1..6"):
        build("ilidsvid_tfclip", tmp_path)
    savemat(mat, {"ls_set": np.arange(1, 7, dtype=np.float64)[None]})
    person = osp.join(written["dir"], "i-LIDS-VID", "sequences", "cam2", written["persons"][4])
    for name in os.listdir(person):
        os.remove(osp.join(person, name))
    with pytest.raises(DatasetLayoutError, match=f'no .png frames in "{person}"'):
        build("ilidsvid_tfclip", tmp_path)


@pytest.fixture
def prid_root(tmp_path):
    lengths = [(12, 5), (3, 9), (7, 7), (2, 15), (10, 1), (4, 4)]
    splits = [([0, 2, 4], [1, 3, 5]), ([1, 3, 5], [0, 2, 4])]
    return tmp_path, write_prid2011(str(tmp_path), lengths, splits)


@pytest.mark.parametrize("split_id", [0, 1])
def test_prid2011_sorted_frames_and_cameras(prid_root, split_id):
    root, written = prid_root
    dataset = build("prid2011", root, split_id=split_id)
    assert type(dataset) is PRID2011
    persons, frames = written["persons"], written["frames"]
    test_ids = [1, 3, 5] if split_id == 0 else [0, 2, 4]
    train_ids = sorted(set(range(6)) - set(test_ids))
    assert [item[:3] for item in dataset.train] == [
        (frames[(persons[i], cam)], pid, c) for pid, i in enumerate(train_ids) for c, cam in enumerate("ab")]
    assert [item[:3] for item in dataset.query] == [(frames[(persons[i], "a")], pid, 0) for pid, i in enumerate(test_ids)]
    assert [item[:3] for item in dataset.gallery] == [(frames[(persons[i], "b")], pid, 1)
                                                      for pid, i in enumerate(test_ids)]


def test_prid2011_missing_split_file_is_named(prid_root):
    root, written = prid_root
    os.remove(osp.join(written["dir"], "splits_prid2011.json"))
    with pytest.raises(DatasetLayoutError, match=r"prid2011/splits_prid2011.json"):
        build("prid2011", root)
