"""2-D t-SNE map of the test features of a sample of identities (scikit-learn)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..files.test_outputs import TestOutputs

MIN_TRACKLETS = 5


@dataclass
class FeatureMap:
    """xy (n, 2) t-SNE coordinates of the sampled tracklets, their pids (n,), is_query (n,) bool,
    and frames (n, F) paths."""

    xy: np.ndarray
    pids: np.ndarray
    is_query: np.ndarray
    frames: np.ndarray


def sample_identities(outputs: TestOutputs, num_identities: int, seed: int = 0) -> np.ndarray:
    """``num_identities`` sorted pids drawn by ``seed`` among those in both query and gallery."""
    shared = np.intersect1d(outputs.query_pids, outputs.gallery_pids)
    if len(shared) == 0:
        shared = np.union1d(outputs.query_pids, outputs.gallery_pids)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(shared, size=min(num_identities, len(shared)), replace=False))


def embed_identities(outputs: TestOutputs, identities: np.ndarray, seed: int = 0) -> FeatureMap:
    """t-SNE (PCA init, ``random_state=seed``) of every query and gallery tracklet of ``identities``.

    Perplexity is min(30, (n - 1) / 3) for n tracklets; fewer than ``MIN_TRACKLETS`` is an error.
    One OpenMP thread: a map of a few hundred points takes a fraction of a second on it, while
    scikit-learn's busy-waiting thread pool can stall for many seconds on a shared, loaded CPU.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    features = np.concatenate([outputs.query_features, outputs.gallery_features])
    pids = np.concatenate([outputs.query_pids, outputs.gallery_pids])
    is_query = np.arange(len(pids)) < outputs.num_query
    frames = np.concatenate([outputs.query_frames, outputs.gallery_frames])
    keep = np.isin(pids, identities)
    n = int(keep.sum())
    if n < MIN_TRACKLETS:
        raise ValueError(f"{outputs.path}: {n} tracklets of the sampled identities; a t-SNE map needs {MIN_TRACKLETS}")
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3.0), init="pca", random_state=seed)
    with threadpool_limits(limits=1):
        xy = tsne.fit_transform(features[keep].astype(np.float64))
    return FeatureMap(xy=xy, pids=pids[keep], is_query=is_query[keep], frames=frames[keep])
