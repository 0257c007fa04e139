"""``test_outputs/<target>.npz``: the test features of a run, written by the engine and read by the report.

One file per test dataset:
``query_features`` / ``gallery_features`` (N, D) float16, L2-normalised; ``query_pids``, ``query_camids``,
``gallery_pids``, ``gallery_camids`` (N,) int64; ``query_frames`` / ``gallery_frames`` (N, 4) str, evenly
spaced frame paths of each tracklet (an image's path four times); ``protocol`` () str.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import evaluation
from .atomic import atomic_write

TEST_OUTPUTS_DIR = "test_outputs"
_SPLIT_KEYS = ("features", "pids", "camids", "frames")
FRAMES_PER_TRACKLET = 4


def target_outputs_path(run_dir: str, target: str) -> str:
    """``<run_dir>/test_outputs/<target>.npz``."""
    return os.path.join(run_dir, TEST_OUTPUTS_DIR, f"{target}.npz")


def evenly_spaced_frames(tracklets: Sequence[tuple], count: int = FRAMES_PER_TRACKLET) -> np.ndarray:
    """(N, count) str: ``count`` evenly spaced frame paths of each tracklet (repeated for short ones); an image
    item (one path) repeats its path."""
    rows = []
    for item in tracklets:
        paths = [item[0]] if isinstance(item[0], str) else list(item[0])
        rows.append([paths[int(i)] for i in np.linspace(0, len(paths) - 1, count).round()])
    return np.asarray(rows, dtype=str).reshape(len(rows), count)


def save_test_outputs(path: str, protocol: str, query: Tuple, gallery: Tuple) -> str:
    """Write one ``<target>.npz`` atomically; returns ``path``.

    ``query`` / ``gallery`` = (features (N, D), pids (N,), camids (N,), torchreid tracklet tuples); features
    are stored L2-normalised in float16.
    """
    arrays = {"protocol": np.asarray(protocol)}
    for split, (features, pids, camids, tracklets) in (("query", query), ("gallery", gallery)):
        arrays[f"{split}_features"] = F.normalize(torch.as_tensor(features).float(), dim=1).numpy().astype(np.float16)
        arrays[f"{split}_pids"] = np.asarray(pids, dtype=np.int64)
        arrays[f"{split}_camids"] = np.asarray(camids, dtype=np.int64)
        arrays[f"{split}_frames"] = evenly_spaced_frames(tracklets)
    with atomic_write(path, "wb") as stream:
        np.savez(stream, **arrays)
    return path


@dataclass
class TestOutputs:
    """Features, identities, cameras and frame paths of one test dataset of one run.

    Features are float32 (N, D); ids and cameras int64 (N,); frames str (N, F).
    """

    target: str
    path: str
    protocol: str
    query_features: np.ndarray
    query_pids: np.ndarray
    query_camids: np.ndarray
    query_frames: np.ndarray
    gallery_features: np.ndarray
    gallery_pids: np.ndarray
    gallery_camids: np.ndarray
    gallery_frames: np.ndarray

    __test__ = False  # not a pytest class despite the name

    @property
    def num_query(self) -> int:
        return len(self.query_pids)

    @property
    def num_gallery(self) -> int:
        return len(self.gallery_pids)


def find_test_outputs(run_dir: str) -> List[str]:
    """The ``test_outputs/*.npz`` files of a run, sorted by name; an error if there are none."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    paths = sorted(glob.glob(os.path.join(run_dir, TEST_OUTPUTS_DIR, "*.npz")))
    splits = sorted(glob.glob(os.path.join(run_dir, "split*", TEST_OUTPUTS_DIR)))
    if not paths and splits:
        raise FileNotFoundError(
            f"{run_dir}: a run over several splits keeps its test outputs per split; report the split folders "
            f"({', '.join(os.path.dirname(s) for s in splits[:2])}, ...)"
        )
    if not paths:
        raise FileNotFoundError(
            f"{os.path.join(run_dir, TEST_OUTPUTS_DIR)}: no <target>.npz files; the report needs a test run "
            "saved with tfclip.save_test_outputs True"
        )
    return paths


def load_test_outputs(path: str) -> TestOutputs:
    """Read and check one ``<target>.npz``; errors name the file and the key at fault."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    expected = [f"{split}_{key}" for split in ("query", "gallery") for key in _SPLIT_KEYS]
    missing = [name for name in expected if name not in arrays]
    if "protocol" not in arrays:
        missing.append("protocol")
    if missing:
        raise ValueError(f"{path}: missing array(s) {', '.join(missing)}")
    fields: Dict[str, Any] = {}
    for split in ("query", "gallery"):
        features = arrays[f"{split}_features"]
        if features.ndim != 2:
            raise ValueError(f"{path}: {split}_features must be (N, D); got shape {features.shape}")
        n = features.shape[0]
        for key in ("pids", "camids"):
            values = arrays[f"{split}_{key}"]
            if values.shape != (n,) or values.dtype.kind not in "iu":
                raise ValueError(f"{path}: {split}_{key} must be ({n},) integers; got {values.dtype} {values.shape}")
            fields[f"{split}_{key}"] = values.astype(np.int64)
        frames = arrays[f"{split}_frames"]
        if frames.ndim != 2 or frames.shape[0] != n or frames.dtype.kind != "U":
            raise ValueError(f"{path}: {split}_frames must be ({n}, F) strings; got {frames.dtype} {frames.shape}")
        fields[f"{split}_features"] = features.astype(np.float32)
        fields[f"{split}_frames"] = frames
    if fields["query_features"].shape[1] != fields["gallery_features"].shape[1]:
        raise ValueError(
            f"{path}: query and gallery feature sizes differ "
            f"({fields['query_features'].shape[1]} vs {fields['gallery_features'].shape[1]})"
        )
    protocol = str(arrays["protocol"])
    if protocol not in evaluation.PROTOCOLS:
        raise ValueError(f"{path}: unknown protocol {protocol!r}; expected one of {', '.join(evaluation.PROTOCOLS)}")
    target = os.path.splitext(os.path.basename(path))[0]
    return TestOutputs(target=target, path=path, protocol=protocol, **fields)
