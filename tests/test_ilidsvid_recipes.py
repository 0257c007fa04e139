"""The two iLIDS-VID recipes on a fixture: the standard protocol (150 camera-1 queries against 150 camera-2
tracklets per split, training on the reference's 8-frame windows) and the reference's window protocol."""
import numpy as np
import pytest
import torch

from dataset_fixtures import write_ilidsvid
from tfclip_plugin.cli import merge_config_file, merge_options
from tfclip_plugin.config import get_default_config
from tfclip_plugin.data import build_datamanager
from tfclip_plugin.data.sampling import sliding_windows
from tfclip_plugin.evaluation import protocol_gallery

SMALL = ["data.workers", "0", "data.height", "16", "data.width", "8", "test.batch_size", "4"]


@pytest.fixture(scope="module")
def ilids(tmp_path_factory):
    """300 persons: 40 with 9-40 frames per camera, the rest 1-3."""
    root = tmp_path_factory.mktemp("reid")
    rng = np.random.default_rng(5)
    lengths = [(int(rng.integers(9, 41)), int(rng.integers(9, 41))) if i < 40 else
               (int(rng.integers(1, 4)), int(rng.integers(1, 4))) for i in range(300)]
    return str(root), write_ilidsvid(str(root), lengths), lengths


def recipe(name, root, *opts):
    cfg = get_default_config()
    merge_config_file(cfg, name)
    merge_options(cfg, ["data.root", root, *SMALL, *opts])
    return cfg


def expected_windows(written, lengths, persons_idx, cams, window=8, stride=4):
    count = 0
    for i in persons_idx:
        for cam in cams:
            count += len(sliding_windows(lengths[i][cam - 1], window, stride))
    return count


def test_standard_recipe_queries_150_camera1_tracklets_against_150_camera2_tracklets(ilids):
    root, written, lengths = ilids
    cfg = recipe("tfclip_vit_ilidsvid", root)
    assert cfg.tfclip.protocol == "torchreid" and cfg.tfclip.all_splits and cfg.tfclip.test_sampling == "dense"
    assert cfg.tfclip.ssp_residual == "pre-release" and cfg.tfclip.erase_at_size_position
    for split_id in (0, 4):
        cfg.data.split_id = split_id
        dm = build_datamanager(cfg)
        query, gallery = dm.fetch_test_loaders("ilidsvid")
        assert len(query) == 150 and len(gallery) == 150
        assert {q[2] for q in query} == {0} and {g[2] for g in gallery} == {1}
        assert sorted(q[1] for q in query) == sorted(g[1] for g in gallery) == list(range(150))
        features = torch.zeros(150, 2)
        ranked, _, _ = protocol_gallery(cfg.tfclip.protocol, features, features, [q[1] for q in query],
                                        [g[1] for g in gallery], [0] * 150, [1] * 150)
        assert ranked.shape[0] == 150  # each query ranks the 150 camera-2 tracklets only
        row = written["ls_set"][split_id] - 1
        train_idx = sorted(row[150:])
        assert all(len(q[0]) == lengths[sorted(row[:150])[q[1]]][0] for q in query)  # whole tracklets, all frames
        train = dm.train_loader.dataset.train
        assert len(train) == expected_windows(written, lengths, train_idx, (1, 2)) > 300
        assert all(len(item[0]) <= 8 for item in train) and dm.num_train_pids == 150
        assert len(dm.train_loader) > 37  # more batches than the 37 of whole tracklets


def test_whole_tracklet_training_is_one_key_away(ilids):
    root, written, lengths = ilids
    dm = build_datamanager(recipe("tfclip_vit_ilidsvid", root, "tfclip.ilidsvid_train_stride", "0"))
    train = dm.train_loader.dataset.train
    assert len(train) == 300 and len(dm.train_loader) == 37  # 150 ids x 4 instances / 16, the count before
    assert sorted(len(item[0]) for item in train) == sorted(
        lengths[i][c] for i in sorted(written["ls_set"][0][150:] - 1) for c in (0, 1))


def test_reference_recipe_keeps_its_window_protocol(ilids):
    root, written, lengths = ilids
    cfg = recipe("tfclip_vit_ilidsvid_tfclip", root)
    assert cfg.tfclip.protocol == "tfclip" and list(cfg.data.targets) == ["ilidsvid_tfclip"]
    dm = build_datamanager(cfg)
    query, gallery = dm.fetch_test_loaders("ilidsvid_tfclip")
    row = written["ls_set"][0] - 1
    test_idx, train_idx = sorted(row[150:]), sorted(row[:150])  # the reference's halves
    assert len(query) == expected_windows(written, lengths, test_idx, (1,)) > 150
    assert len(gallery) == expected_windows(written, lengths, test_idx, (2,)) > 150
    assert len(dm.train_loader.dataset.train) == expected_windows(written, lengths, train_idx, (1, 2))
