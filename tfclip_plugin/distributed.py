"""torch.distributed helpers: process-group setup from torchrun's environment, the identity sampler
that splits every P x K batch across ranks, and order-preserving gathers."""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterator, List, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from . import host


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 writes logs, tensorboard events, checkpoints and results."""
    return rank() == 0


def init_from_environment() -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); nccl on GPUs, gloo on CPU.

    Returns True when a group was initialised. Sets the CUDA device to ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


@contextmanager
def _seeded_global_rngs(seed: int):
    """Run a block with Python's and NumPy's global RNGs seeded, restoring their states afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class DistributedIdentitySampler(Sampler):
    """torchreid's ``RandomIdentitySampler`` plan, shared out across ranks batch by batch.

    Every rank draws the same epoch plan (torchreid's sampler under a seed of ``seed + epoch``), cuts it
    into global batches of ``batch_size`` = P x K tracklets and takes its own contiguous slice of
    ``batch_size / world`` indices from each. The global batch and the number of iterations per epoch
    therefore equal those of a single-process run with the same seed; slices are multiples of K so
    that every rank sees whole identities (batch-hard triplets stay meaningful).
    """

    def __init__(
        self, data_source: Sequence, batch_size: int, num_instances: int, num_replicas: int | None = None,
        rank_id: int | None = None, seed: int = 0,
    ) -> None:
        self.num_replicas = world_size() if num_replicas is None else num_replicas
        self.rank = rank() if rank_id is None else rank_id
        if batch_size % (self.num_replicas * num_instances):
            raise ValueError(
                f"train.batch_size={batch_size} must be a multiple of world size x sampler.num_instances "
                f"= {self.num_replicas} x {num_instances} so that each rank gets whole identities"
            )
        self.plan = host.RandomIdentitySampler(data_source, batch_size, num_instances)
        self.batch_size = batch_size
        self.local_batch_size = batch_size // self.num_replicas
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's plan; call before iterating, with the same value on every rank."""
        self.epoch = epoch

    def global_plan(self) -> List[int]:
        """The epoch's full index list, whole global batches only."""
        with _seeded_global_rngs(self.seed + self.epoch):
            indices = list(self.plan)
        return indices[: len(indices) - len(indices) % self.batch_size]

    def __iter__(self) -> Iterator[int]:
        plan = self.global_plan()
        start = self.rank * self.local_batch_size
        for batch_start in range(0, len(plan), self.batch_size):
            yield from plan[batch_start + start : batch_start + start + self.local_batch_size]

    def __len__(self) -> int:
        return len(self.global_plan()) // self.num_replicas


def gather_in_order(tensor: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """All-gather per-rank row blocks of different lengths and concatenate them in rank order.

    Args:
        tensor: this rank's rows, (counts[rank], ...).
        counts: rows held by each rank.
    Returns:
        (sum(counts), ...) on every rank.
    """
    if not is_distributed():
        return tensor
    longest = max(counts)
    padded = tensor.new_zeros((longest,) + tuple(tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    blocks = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(blocks, padded)
    return torch.cat([block[:n] for block, n in zip(blocks, counts)])


def shard_range(total: int, rank_id: int | None = None, num_replicas: int | None = None) -> range:
    """The contiguous block of ``range(total)`` that a rank handles (blocks differ in size by at most 1)."""
    r = rank() if rank_id is None else rank_id
    w = world_size() if num_replicas is None else num_replicas
    base, extra = divmod(total, w)
    start = r * base + min(r, extra)
    return range(start, start + base + (1 if r < extra else 0))
