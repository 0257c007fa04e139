import sys

import numpy as np
import pytest
import torch

from tfclip_plugin import host
from tfclip_plugin.data.sampling import (dense_chunks, rrs_chunks, rrs_test_indices, rrs_train_indices,
                                         sliding_windows, subtracklet_bounds, torchreid_indices)

# AsuradaYuci/TF-CLIP datasets/video_loader_xh.py:36-50,125-142: chunk tables, RRS-test picks and dense chunks, written out by hand
PLANS = {
    1: ([[0]] * 8, [0] * 8, [[0] * 8]),
    3: ([[0], [1], [2], [2], [2], [2], [2], [2]], [0, 1, 2, 2, 2, 2, 2, 2], [[0, 1, 2, 0, 1, 2, 0, 1]]),
    5: ([[0], [1], [2], [3], [4], [4], [4], [4]], [0, 1, 2, 3, 4, 4, 4, 4], [[0, 1, 2, 3, 4, 0, 1, 2]]),
    8: ([[i] for i in range(8)], list(range(8)), [list(range(8))]),
    10: ([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [9, 9], [9, 9], [9, 9]], [0, 2, 4, 6, 8, 9, 9, 9],
         [list(range(8)), [8, 9, 8, 9, 8, 9, 8, 9]]),
    16: ([[2 * i, 2 * i + 1] for i in range(8)], list(range(0, 16, 2)), [list(range(8)), list(range(8, 16))]),
    27: ([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19], [20, 21, 22, 23],
          [24, 25, 26, 26], [26, 26, 26, 26]], [0, 4, 8, 12, 16, 20, 24, 26],
         [list(range(8)), list(range(8, 16)), list(range(16, 24)), [24, 25, 26, 24, 25, 26, 24, 25]]),
}


@pytest.mark.parametrize("n", sorted(PLANS))
def test_rrs_chunk_table_test_plan_and_dense_chunks(n):
    chunks, test, dense = PLANS[n]
    assert rrs_chunks(n).tolist() == chunks
    assert rrs_test_indices(n).tolist() == test
    assert dense_chunks(n).tolist() == dense
    assert dense_chunks(n).dtype == np.int64 and rrs_test_indices(n).shape == (8,)


@pytest.mark.parametrize("n", sorted(PLANS))
def test_rrs_train_takes_one_uniform_frame_per_chunk(n):
    table = np.asarray(PLANS[n][0])
    seen = [set() for _ in range(8)]
    rng = np.random.default_rng(0)
    for _ in range(400):
        plan = rrs_train_indices(n, rng=rng)
        assert plan.shape == (8,)
        for s, frame in enumerate(plan):
            assert frame in table[s]
            seen[s].add(int(frame))
    assert seen == [set(row.tolist()) for row in table]  # every frame of every chunk gets drawn
    twin = np.random.default_rng(5)
    expected = table[np.arange(8), twin.integers(0, table.shape[1], 8)]
    assert rrs_train_indices(n, rng=np.random.default_rng(5)).tolist() == expected.tolist()


def test_rrs_train_without_rng_draws_what_the_reference_draws():
    # the reference: idx = np.random.choice(chunk_len, 8); frames = table[arange(8), idx] (numpy global state)
    np.random.seed(1234)
    plan = rrs_train_indices(27)
    np.random.seed(1234)
    expected = rrs_chunks(27)[np.arange(8), np.random.choice(4, 8)]
    assert plan.tolist() == expected.tolist()


def test_other_clip_lengths_follow_the_same_rules():
    assert rrs_test_indices(10, seq_len=4).tolist() == [0, 3, 6, 9]
    assert dense_chunks(10, seq_len=4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9]]
    assert dense_chunks(17).tolist() == [list(range(8)), list(range(8, 16)), [16] * 8]


def test_empty_tracklets_are_rejected():
    for plan in (rrs_chunks, rrs_test_indices, dense_chunks, rrs_train_indices):
        with pytest.raises(ValueError, match="at least one frame"):
            plan(0)


def test_ilids_reference_windows_leave_out_the_last_full_window():
    assert sliding_windows(3) == [(0, 3)]
    assert sliding_windows(8) == [(0, 8)]
    assert sliding_windows(9) == [(0, 8)]
    assert sliding_windows(16) == [(0, 8), (4, 12)]
    assert sliding_windows(17) == [(0, 8), (4, 12), (8, 16)]
    assert sliding_windows(23) == [(0, 8), (4, 12), (8, 16), (12, 20)]


def test_lsvid_subtracklets_keep_short_tracklets_whole():
    assert subtracklet_bounds(20) == [(0, 20)]  # the reference drops it
    assert subtracklet_bounds(48) == [(0, 48)]
    assert subtracklet_bounds(95) == [(0, 95)]
    assert subtracklet_bounds(96) == [(0, 48), (48, 96)]
    assert subtracklet_bounds(150) == [(0, 48), (48, 96), (96, 150)]  # the last piece takes the remainder
    assert subtracklet_bounds(150, 0) == [(0, 150)]
    with pytest.raises(ValueError, match="length"):
        subtracklet_bounds(10, -1)


@pytest.mark.parametrize("method", ["evenly", "random", "all"])
@pytest.mark.parametrize("n", [3, 8, 10, 27])
def test_torchreid_methods_pick_what_torchreid_picks(monkeypatch, method, n):
    """torchreid's own VideoDataset.__getitem__, with frame reading replaced by the frame number."""
    module = sys.modules[host.VideoDataset.__module__]
    monkeypatch.setattr(module, "read_image", lambda path: int(path))
    tracklet = (tuple(str(i) for i in range(n)), 0, 0)
    dataset = host.VideoDataset([tracklet], [tracklet], [tracklet], seq_len=8, sample_method=method,
                                transform=lambda frame: torch.tensor([frame]), verbose=False)
    np.random.seed(7)
    picked = dataset[0]["img"].flatten().tolist()
    np.random.seed(7)
    assert torchreid_indices(method, n, 8).tolist() == picked


def test_unknown_torchreid_method_is_named():
    with pytest.raises(ValueError, match="'dense'.*evenly, random, all"):
        torchreid_indices("dense", 5, 8)
