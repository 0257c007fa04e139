"""Frame index plans for a tracklet of ``num_frames`` frames (pure numpy functions).

TF-CLIP (AsuradaYuci/TF-CLIP ``datasets/video_loader_xh.py:36-50,125-142``,
``processor/processor_clipreid_stage2.py:50-100,243-294``):

- RRS: the frames are padded with the last frame to ``seq_len * ceil(n / seq_len)`` and cut into
  ``seq_len`` chunks of ``ceil(n / seq_len)`` frames (for n < seq_len: single frames, then the last one
  repeated). Training takes one uniformly random frame of each chunk, testing the first one.
- dense: consecutive ``seq_len``-frame chunks over all frames; the last chunk (1..seq_len frames) is padded
  by cycling its own frames.

torchreid's own methods ('evenly', 'random', 'all') are reproduced by :func:`torchreid_indices` so that a
sequence transform can be applied to the frames they select.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np

TORCHREID_METHODS = ("evenly", "random", "all")


def _check(num_frames: int, seq_len: int) -> None:
    if num_frames < 1:
        raise ValueError(f"a tracklet needs at least one frame; got num_frames={num_frames}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive; got {seq_len}")


def rrs_chunks(num_frames: int, seq_len: int = 8) -> np.ndarray:
    """The RRS chunk table: (seq_len, ceil(num_frames / seq_len)) frame indices, row s = chunk s."""
    _check(num_frames, seq_len)
    chunk_len = math.ceil(num_frames / seq_len)
    strip = np.full(seq_len * chunk_len, num_frames - 1, dtype=np.int64)
    strip[:num_frames] = np.arange(num_frames)
    return strip.reshape(seq_len, chunk_len)


def rrs_train_indices(num_frames: int, seq_len: int = 8, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """RRS training plan (seq_len,): one uniformly random frame of each chunk.

    Without ``rng`` the draw uses numpy's global state, as the reference (``np.random.choice(chunk_len,
    seq_len)`` draws the same numbers as ``np.random.randint(0, chunk_len, seq_len)``); torchreid's
    ``set_random_seed`` and DataLoader workers seed that state.
    """
    table = rrs_chunks(num_frames, seq_len)
    chunk_len = table.shape[1]
    if rng is None:
        picks = np.random.randint(0, chunk_len, seq_len)
    else:
        picks = rng.integers(0, chunk_len, seq_len)
    return table[np.arange(seq_len), picks]


def rrs_test_indices(num_frames: int, seq_len: int = 8) -> np.ndarray:
    """RRS test plan (seq_len,): the first frame of each chunk (e.g. n=10 -> [0, 2, 4, 6, 8, 9, 9, 9])."""
    return rrs_chunks(num_frames, seq_len)[:, 0].copy()


def dense_chunks(num_frames: int, seq_len: int = 8) -> np.ndarray:
    """Dense test plan (n_chunks, seq_len): all frames in consecutive chunks, the last one cycled,
    e.g. n=27 -> [0..7], [8..15], [16..23], [24, 25, 26, 24, 25, 26, 24, 25]."""
    _check(num_frames, seq_len)
    num_chunks = max(1, math.ceil(num_frames / seq_len))
    full = np.arange((num_chunks - 1) * seq_len, dtype=np.int64).reshape(num_chunks - 1, seq_len)
    last = np.resize(np.arange((num_chunks - 1) * seq_len, num_frames, dtype=np.int64), seq_len)
    return np.concatenate([full, last[None]], axis=0)


def sliding_windows(num_frames: int, window: int = 8, stride: int = 4) -> List[Tuple[int, int]]:
    """The reference's iLIDS-VID windows: (start, start + window) for start in range(0, n - window, stride),
    or [(0, n)] when there is none (n <= window). Note the range leaves out the last full window."""
    _check(num_frames, window)
    if stride < 1:
        raise ValueError(f"stride must be positive; got {stride}")
    windows = [(start, start + window) for start in range(0, num_frames - window, stride)]
    return windows or [(0, num_frames)]


def subtracklet_bounds(num_frames: int, length: int = 48) -> List[Tuple[int, int]]:
    """LS-VID training pieces (AsuradaYuci/TF-CLIP ``datasets/set/lsvid.py``): n // length pieces of ``length``
    frames, the last one taking the remainder. A tracklet shorter than ``length`` (which the reference drops) stays one piece,
    and ``length`` 0 keeps every tracklet whole."""
    if num_frames < 1:
        raise ValueError(f"a tracklet needs at least one frame; got num_frames={num_frames}")
    if length < 0:
        raise ValueError(f"length must be >= 0; got {length}")
    pieces = num_frames // length if length else 0
    if pieces == 0:
        return [(0, num_frames)]
    return [(i * length, (i + 1) * length) for i in range(pieces - 1)] + [((pieces - 1) * length, num_frames)]


def torchreid_indices(method: str, num_frames: int, seq_len: int) -> np.ndarray:
    """The frames torchreid's ``VideoDataset`` picks for ``sample_method`` 'evenly', 'random' or 'all'.

    'evenly': the start of each of seq_len equal chunks (the remainder dropped), or all frames padded with
    the last one; 'random': seq_len sorted random frames (with replacement only when there are too few);
    'all': every frame (num_frames,).
    """
    _check(num_frames, seq_len)
    if method == "evenly":
        if num_frames >= seq_len:
            return np.arange(seq_len, dtype=np.int64) * (num_frames // seq_len)
        return np.concatenate([np.arange(num_frames), np.full(seq_len - num_frames, num_frames - 1)]).astype(np.int64)
    if method == "random":
        picks = np.random.choice(np.arange(num_frames), size=seq_len, replace=num_frames < seq_len)
        return np.sort(picks).astype(np.int64)
    if method == "all":
        return np.arange(num_frames, dtype=np.int64)
    raise ValueError(f"unknown torchreid sample method {method!r}; expected one of {', '.join(TORCHREID_METHODS)}")
