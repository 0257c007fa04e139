"""torch.distributed primitives for ``torchrun``: process-group setup from its environment (surviving torchrun's
in-place restarts), the identity sampler that splits every P x K batch across ranks, per-epoch seeds, SyncBatchNorm
BNNecks, work sharded over ranks and gathered in order (CLIP-Memory, test features), a value agreed by all ranks
(stop requests) and rank-0-only writing. Engines prepare themselves for a process group with these
(``engine.mixins.DistributedMixin``); the cross-rank triplet loss is in ``engine.losses``.

No function here calls a collective while an exception unwinds (no collective in an ``except`` or ``finally``):
a rank whose peer died or stopped must fail or stop, never wait for it.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import random
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from . import host
from .files.checkpoint_file import save_checkpoint
from .stopping import ignore_stop_signals_in_worker

T = TypeVar("T")
Rows = Union[torch.Tensor, Tuple[Union[torch.Tensor, np.ndarray], ...]]
TRAIN_SAMPLERS = ("RandomIdentitySampler", "RandomSampler")
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # torch's default for gloo and nccl
ATTEMPT_PREFIX = "tfclip_plugin/attempt"


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def backend() -> str:
    """The process group's backend ('gloo', 'nccl'), or '' outside a process group."""
    return str(dist.get_backend()) if is_distributed() else ""


def is_main_process() -> bool:
    """Rank 0 writes logs, tensorboard events, checkpoints and results."""
    return rank() == 0


def attempt_store_prefix(environ: Mapping[str, str]) -> Optional[str]:
    """The key prefix of this torchrun attempt's process group, or None where torch's ``env://`` set-up is safe.

    torchrun's agent keeps one TCPStore for the whole job (static rendezvous always; c10d unless
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``), announced to the workers as ``TORCHELASTIC_USE_AGENT_STORE=True``.
    After an in-place restart (``--max-restarts``) the keys that the previous attempt's gloo/nccl set-up wrote
    are still in it, and a restarted rank can read the address of a dead peer (torch 2.14: 'Gloo connectFullMesh
    failed ... Connection refused', or a hang). Keys under a prefix per attempt (``TORCHELASTIC_RESTART_COUNT``)
    cannot be stale.
    """
    if environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    return f"{ATTEMPT_PREFIX}{int(environ.get('TORCHELASTIC_RESTART_COUNT', '0'))}"


def multi_node_restart_warning(environ: Mapping[str, str]) -> Optional[str]:
    """The warning for in-place restarts over several machines that share the agent's store, else None.

    With c10d rendezvous the machines' restart counts can differ after a restart (pytorch/pytorch#135712), so the
    per-attempt prefixes would not match; ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` gives every attempt a fresh
    store instead. Static rendezvous keeps the counts equal (the warning cannot tell the two apart).
    """
    if (int(environ.get("GROUP_WORLD_SIZE", "1")) > 1 and int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
            and attempt_store_prefix(environ) is not None):
        return ("torchrun --max-restarts over several machines: with --rdzv-backend c10d export "
                "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for torchrun on every machine, otherwise a restart can wait "
                "for tfclip.dist_timeout and fail (static rendezvous with --node-rank needs nothing); "
                "docs/distributed.md")
    return None


def init_from_environment(use_gpu: bool = True, timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): nccl when ``use_gpu`` and CUDA is
    available (the CUDA device is set to ``LOCAL_RANK``), gloo otherwise.

    Under torchrun's shared store the group is set up on this attempt's keys (:func:`attempt_store_prefix`), so
    that ``torchrun --max-restarts N`` restarts re-form it. ``timeout`` bounds the set-up and every collective:
    a rank whose peer is alive but stuck fails after it instead of waiting forever.

    Returns True when a group is initialised (by this call or before it).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if use_gpu and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    warning = multi_node_restart_warning(os.environ)
    if warning and os.environ.get("RANK") == "0":
        warnings.warn(warning, stacklevel=2)
    prefix = attempt_store_prefix(os.environ)
    if prefix is None:
        dist.init_process_group(backend=backend, timeout=timeout)
        return True
    agent_store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                                timeout=timeout)
    dist.init_process_group(backend=backend, store=dist.PrefixStore(prefix, agent_store),
                            rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]), timeout=timeout)
    return True


def torchrun_restart_count() -> int:
    """How often torchrun has restarted this job's workers (``TORCHELASTIC_RESTART_COUNT``; 0 outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def local_rank() -> int:
    """This process's rank on its node (torchrun's ``LOCAL_RANK``; 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


@contextmanager
def process_group(use_gpu: bool = True, timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> Iterator[bool]:
    """:func:`init_from_environment` for the block; a group initialised here is destroyed afterwards (a local
    call, also when the block failed)."""
    created = not is_distributed() and init_from_environment(use_gpu, timeout)
    try:
        yield is_distributed()
    finally:
        if created:
            dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where tensors must be for the group's collectives (nccl: the current GPU; gloo: the CPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. generating a dataset or downloading weights), the other ranks after it."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


@contextmanager
def quiet_unless_main() -> Iterator[None]:
    """Discard stdout on ranks other than 0 (stderr, with warnings and tracebacks, stays)."""
    if is_main_process():
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink):
        yield


def main_process_value(compute: Callable[[], T]) -> T:
    """``compute()`` evaluated on rank 0 and sent to every rank (picklable values, e.g. a cached tensor or None)."""
    if not is_distributed():
        return compute()
    box = [compute() if is_main_process() else None]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]


def max_over_ranks(value: int) -> int:
    """The largest of every rank's ``value`` (one all-reduce of one integer; ``value`` itself outside a process
    group). The training loop agrees on stop requests with it."""
    if not is_distributed():
        return int(value)
    staged = torch.tensor([int(value)], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(staged, op=dist.ReduceOp.MAX)
    return int(staged.item())


def save_on_main_process(state: dict, path: str) -> str:
    """Write a checkpoint on rank 0 only (atomically, ``files.checkpoint_file.save_checkpoint``); return ``path``
    on every rank."""
    return save_checkpoint(state, path) if is_main_process() else path


def broadcast_tensors(tensors: Iterable[torch.Tensor]) -> None:
    """Overwrite ``tensors`` in place with rank 0's values (no-op outside a process group)."""
    if not is_distributed():
        return
    device = _collective_device()
    for tensor in tensors:
        staged = tensor.data.to(device)
        dist.broadcast(staged, src=0)
        tensor.data.copy_(staged)


def load_on_main_process(module: nn.Module, state_dict: Callable[[], dict]) -> None:
    """Rank 0 loads ``state_dict()`` into ``module`` (its file need exist on rank 0's machine only); then every
    rank receives rank 0's parameters and buffers."""
    if is_main_process():
        module.load_state_dict(state_dict())
    broadcast_tensors(list(module.parameters()) + list(module.buffers()))


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
    therefore equal those of a single-process run with the same seed. A slice holds whole identities when
    ``batch_size / world`` is a multiple of K; otherwise identities straddle ranks, which triplet mining over
    the gathered global batch (:class:`CrossRankTripletLoss`) does not mind.
    """

    def __init__(
        self, data_source: Sequence, batch_size: int, num_instances: int, num_replicas: int | None = None,
        rank_id: int | None = None, seed: int = 0,
    ) -> None:
        self.num_replicas = world_size() if num_replicas is None else num_replicas
        self.rank = rank() if rank_id is None else rank_id
        if batch_size % self.num_replicas:
            raise ValueError(f"train.batch_size={batch_size} must be a multiple of the world size {self.num_replicas} "
                             "(each process takes an equal share of every batch)")
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
        (sum(counts), ...) on every rank, on ``tensor``'s device.
    """
    if not is_distributed():
        return tensor
    longest = max(counts)
    padded = tensor.new_zeros((longest,) + tuple(tensor.shape[1:]), device=_collective_device())
    padded[: tensor.shape[0]] = tensor
    blocks = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(blocks, padded)
    return torch.cat([block[:n] for block, n in zip(blocks, counts)]).to(tensor.device)


def shard_range(total: int, rank_id: int | None = None, num_replicas: int | None = None) -> range:
    """The contiguous block of ``range(total)`` that a rank handles (blocks differ in size by at most 1)."""
    r = rank() if rank_id is None else rank_id
    w = world_size() if num_replicas is None else num_replicas
    base, extra = divmod(total, w)
    start = r * base + min(r, extra)
    return range(start, start + base + (1 if r < extra else 0))


def _gather_rows(rows: Union[torch.Tensor, np.ndarray], counts: Sequence[int]) -> Union[torch.Tensor, np.ndarray]:
    if isinstance(rows, np.ndarray):
        return gather_in_order(torch.from_numpy(np.ascontiguousarray(rows)), counts).numpy()
    return gather_in_order(rows, counts)


def gather_shards(compute: Callable[[range], Rows], total: int) -> Rows:
    """``compute`` on this rank's block of ``range(total)`` (:func:`shard_range`), every rank's rows gathered
    in order: the result of ``compute(range(total))``, on every rank.

    ``compute(indices)`` returns a Tensor (len(indices), ...) or a tuple of Tensors / numeric numpy arrays with
    len(indices) rows each. Outside a process group, or with fewer items than ranks, every rank computes all.
    """
    if not is_distributed() or total < world_size():
        return compute(range(total))
    counts = [len(shard_range(total, r)) for r in range(world_size())]
    rows = compute(shard_range(total))
    if isinstance(rows, tuple):
        return tuple(_gather_rows(part, counts) for part in rows)
    return _gather_rows(rows, counts)


def shard_loader(loader: DataLoader, indices: range) -> DataLoader:
    """A test loader over ``indices`` of ``loader``'s dataset, in order (same batch size and workers);
    ``loader`` itself when ``indices`` is the whole dataset."""
    if indices == range(len(loader.dataset)):
        return loader
    return DataLoader(Subset(loader.dataset, list(indices)), batch_size=loader.batch_size, shuffle=False,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      worker_init_fn=ignore_stop_signals_in_worker)


def distributed_train_loader(loader: DataLoader, train_sampler: str, batch_size: int, num_instances: int,
                             seed: int) -> DataLoader:
    """The train loader of one rank: ``batch_size / world`` tracklets per step, same number of steps per epoch
    as the single-process loader with ``batch_size``.

    ``train_sampler`` 'RandomIdentitySampler': :class:`DistributedIdentitySampler`; 'RandomSampler': torch's
    ``DistributedSampler`` (shuffled with ``seed``). Either has ``set_epoch``.
    """
    world = world_size()
    dataset = loader.dataset
    if train_sampler == "RandomIdentitySampler":
        sampler: Sampler = DistributedIdentitySampler(dataset.train, batch_size, num_instances, seed=seed)
    elif train_sampler == "RandomSampler":
        if batch_size % world:
            raise ValueError(f"train.batch_size={batch_size} must be a multiple of the world size {world} "
                             "(each process takes an equal share of every batch)")
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
    else:
        raise ValueError(f"sampler.train_sampler must be one of {', '.join(TRAIN_SAMPLERS)} under torchrun; "
                         f"got {train_sampler!r}")
    return DataLoader(dataset, sampler=sampler, batch_size=batch_size // world, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory, drop_last=True, worker_init_fn=ignore_stop_signals_in_worker)


def epoch_seed(seed: int, epoch: int, rank_id: int, num_replicas: int) -> int:
    """The seed of a rank's random streams in ``epoch`` (0-based) under a process group:
    ``seed + rank + world x epoch`` (distinct for every rank and epoch)."""
    return seed + rank_id + num_replicas * epoch


@contextmanager
def training_epoch(loader: DataLoader, model: nn.Module, epoch: int, seed: Optional[int] = None) -> Iterator[None]:
    """Around one training epoch: select the sampler's plan of ``epoch``; in a process group reseed this rank's
    python, numpy and torch generators with :func:`epoch_seed` (when ``seed`` is given), so that an epoch's
    augmentation and dropout draws do not depend on where the run started: a run resumed at any epoch, on any
    rank, draws what the uninterrupted run draws. Afterwards every rank gets rank 0's buffers (BN running
    statistics move on with each rank's last batch), so that all ranks test one model; after an exception
    nothing is sent."""
    set_epoch = getattr(loader.sampler, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)
    if seed is not None and is_distributed():
        host.set_random_seed(epoch_seed(seed, epoch, rank(), world_size()))
    yield
    broadcast_tensors(model.buffers())


class NullSummaryWriter:
    """Stands in for tensorboard's ``SummaryWriter`` on ranks other than 0 (torchreid's ``Engine.run`` makes a
    writer only when the engine has none): records nothing."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir

    def get_logdir(self) -> str:
        return self.log_dir

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        """Discard a scalar."""

    def close(self) -> None:
        """Nothing to close."""


def convert_bnnecks_to_sync_bn(model: nn.Module) -> List[str]:
    """Replace every ``BatchNorm1d`` of ``model`` (TF-CLIP's BNNecks) by ``SyncBatchNorm`` sharing its parameters
    and buffers, so that training normalises with the global batch's statistics. Returns the converted names."""
    names = [name for name, module in model.named_modules() if type(module) is nn.BatchNorm1d]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(parent, child)))
    return names
