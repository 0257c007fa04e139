"""Top-k gallery tracklets per query, and the choice of queries a ranked-results figure shows."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import evaluation, host
from ..files.test_outputs import TestOutputs

_QUERY_CHUNK = 1024


@dataclass
class Gallery:
    """The gallery a protocol ranks against: features (G, D), pids, camids (G,), frames (G, F)."""

    features: torch.Tensor
    pids: np.ndarray
    camids: np.ndarray
    frames: np.ndarray


@dataclass
class Ranking:
    """Top-k of every query after same-identity-same-camera entries are removed.

    indices, distances, matches: (Nq, k) gallery rows (-1 past the end of a short gallery), squared
    Euclidean distances (inf there), same identity;
    first_match: (Nq,) 0-based position of the first true match in the full ranked list, -1 if none;
    first_match_gap: (Nq,) distance of that match minus the rank-1 distance (0 for rank-1 hits, NaN if none).
    """

    gallery: Gallery
    indices: np.ndarray
    distances: np.ndarray
    matches: np.ndarray
    first_match: np.ndarray
    first_match_gap: np.ndarray


def ranking_gallery(outputs: TestOutputs, protocol: str) -> Gallery:
    """The protocol's gallery (:func:`evaluation.protocol_gallery`) with the frame paths of its tracklets."""
    features, pids, camids = evaluation.protocol_gallery(
        protocol, torch.from_numpy(outputs.query_features), torch.from_numpy(outputs.gallery_features),
        outputs.query_pids, outputs.gallery_pids, outputs.query_camids, outputs.gallery_camids,
    )
    frames = outputs.gallery_frames
    if evaluation.QUERY_IN_GALLERY[protocol]:
        frames = np.concatenate([outputs.query_frames, outputs.gallery_frames])
    return Gallery(features, pids, camids, frames)


def rank_gallery(outputs: TestOutputs, protocol: str, topk: int) -> Ranking:
    """Rank the protocol's gallery for every query by squared Euclidean distance (stable order on ties)."""
    if topk < 1:
        raise ValueError(f"topk must be at least 1; got {topk}")
    gallery = ranking_gallery(outputs, protocol)
    n_q = outputs.num_query
    k = min(topk, len(gallery.pids))
    indices = np.full((n_q, k), -1, dtype=np.int64)
    distances = np.full((n_q, k), np.inf)
    first_match = np.full(n_q, -1, dtype=np.int64)
    first_match_gap = np.full(n_q, np.nan)
    queries = torch.from_numpy(outputs.query_features)
    for start in range(0, n_q, _QUERY_CHUNK):
        stop = min(start + _QUERY_CHUNK, n_q)
        dist = host.compute_distance_matrix(queries[start:stop], gallery.features, "euclidean").double().numpy()
        pids = outputs.query_pids[start:stop, None]
        removed = (gallery.pids[None, :] == pids) & (gallery.camids[None, :] == outputs.query_camids[start:stop, None])
        dist[removed] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")
        for row, query in enumerate(range(start, stop)):
            ranked = order[row][np.isfinite(dist[row, order[row]])]
            top = ranked[:k]
            indices[query, : len(top)] = top
            distances[query, : len(top)] = dist[row, top]
            hits = np.flatnonzero(gallery.pids[ranked] == pids[row, 0])
            if len(hits):
                first_match[query] = hits[0]
                first_match_gap[query] = dist[row, ranked[hits[0]]] - dist[row, ranked[0]]
    matches = (indices >= 0) & (gallery.pids[indices] == outputs.query_pids[:, None])
    return Ranking(gallery, indices, distances, matches, first_match, first_match_gap)


def choose_queries(ranking: Ranking, num_queries: int, seed: int = 0) -> np.ndarray:
    """Query rows to show: rank-1 misses first, worst first, then rank-1 hits drawn by ``seed``.

    Up to half of the rows (rounded up) are misses, ordered by the position of the first true match
    (later is worse), then by how far it lies behind the rank-1 distance. The hits are a random
    sample (``numpy.random.default_rng(seed)``) in query order. When one kind runs short the other
    fills the rows. Queries with no true match in the gallery are never shown.
    """
    misses = np.flatnonzero(ranking.first_match > 0)
    hits = np.flatnonzero(ranking.first_match == 0)
    misses = misses[np.lexsort((-ranking.first_match_gap[misses], -ranking.first_match[misses]))]
    n_miss = min(len(misses), (num_queries + 1) // 2)
    n_hit = min(len(hits), num_queries - n_miss)
    n_miss = min(len(misses), num_queries - n_hit)
    rng = np.random.default_rng(seed)
    chosen_hits = np.sort(rng.choice(hits, size=n_hit, replace=False)) if n_hit else hits[:0]
    return np.concatenate([misses[:n_miss], chosen_hits]).astype(np.int64)
