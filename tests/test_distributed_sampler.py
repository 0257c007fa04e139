import pytest

from tfclip_plugin.distributed import DistributedIdentitySampler, shard_range


def _tracklets(num_ids=6, per_id=(5, 3, 8, 4, 2, 6)):
    data = []
    for pid in range(num_ids):
        data += [((f"{pid}_{i}.jpg",), pid, i % 2) for i in range(per_id[pid])]
    return data


def test_ranks_split_each_global_batch_disjointly():
    data = _tracklets()
    single = DistributedIdentitySampler(data, batch_size=8, num_instances=2, num_replicas=1, rank_id=0, seed=7)
    ranks = [DistributedIdentitySampler(data, 8, 2, num_replicas=2, rank_id=r, seed=7) for r in (0, 1)]
    for epoch in (0, 1):
        for s in [single] + ranks:
            s.set_epoch(epoch)
        plan = list(single)
        parts = [list(s) for s in ranks]
        assert len(parts[0]) == len(parts[1]) == len(plan) // 2 == len(ranks[0])
        assert len(plan) % 8 == 0 and len(plan) > 0
        for b in range(len(plan) // 8):
            global_batch = plan[b * 8 : (b + 1) * 8]
            assert parts[0][b * 4 : (b + 1) * 4] + parts[1][b * 4 : (b + 1) * 4] == global_batch
            for part in parts:  # each rank's slice holds whole identities (K = 2)
                pids = [data[i][1] for i in part[b * 4 : (b + 1) * 4]]
                assert pids[0] == pids[1] and pids[2] == pids[3]
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert list(single) != first  # a new plan each epoch


def test_plan_does_not_disturb_global_rngs():
    import random

    import numpy as np

    random.seed(3)
    np.random.seed(3)
    expected = (random.random(), np.random.rand())
    random.seed(3)
    np.random.seed(3)
    list(DistributedIdentitySampler(_tracklets(), 8, 2, num_replicas=1, rank_id=0))
    assert (random.random(), np.random.rand()) == expected


def test_batch_must_split_evenly_across_ranks():
    with pytest.raises(ValueError, match=r"train.batch_size=10 must be a multiple of the world size 4 "):
        DistributedIdentitySampler(_tracklets(), 10, 2, num_replicas=4, rank_id=0)


def test_slices_smaller_than_an_identity_still_cover_each_global_batch():
    data = _tracklets()
    single = DistributedIdentitySampler(data, 8, 4, num_replicas=1, rank_id=0, seed=5)
    ranks = [DistributedIdentitySampler(data, 8, 4, num_replicas=4, rank_id=r, seed=5) for r in range(4)]
    plan, parts = list(single), [list(s) for s in ranks]
    assert [len(p) for p in parts] == [len(plan) // 4] * 4
    for b in range(len(plan) // 8):
        assert sum((p[2 * b : 2 * b + 2] for p in parts), []) == plan[8 * b : 8 * b + 8]


def test_shard_range_covers_everything_once():
    blocks = [shard_range(11, r, 3) for r in range(3)]
    assert [list(b) for b in blocks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
