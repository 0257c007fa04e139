"""Evaluation protocols for video and image ReID: CMC, mAP and mINP on tracklet or image features.

Three protocols (``tfclip.protocol``; '' picks the data type's standard, :data:`STANDARD_PROTOCOL`):

- ``tfclip``: gallery = query + gallery; gallery entries with the query's identity *and* camera are removed
  (so each query drops itself). The reference's evaluator and the official MARS gallery, with the
  Market-1501 metric (torchreid's ``evaluate_rank``): non-interpolated AP, queries without a match skipped.
- ``torchreid``: query vs gallery only, the same metric (torchreid's own evaluation). For image data this is
  the standard protocol (Market-1501, MSMT17; CLIP-ReID ``utils/metrics.py:28-87``, gallery = the gallery set).
- ``official``: the MARS MATLAB code (``evaluation_mars.m`` / ``compute_AP.m``): gallery = query + gallery,
  junk = same identity and camera plus label -1, trapezoid-interpolated AP, CMC and mAP divided by *all*
  queries (a query without a match counts 0).

The Market-1501 definition is computed vectorised (numpy, queries in blocks); it equals torchreid's
``evaluate_rank`` (tested on random data), whose Python path needs about 15 s for a MARS-sized matrix.
mINP (Ye et al., TPAMI 2021) is #matches / rank of the hardest match, averaged like AP.
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

import numpy as np
import torch

from . import host

PROTOCOLS = ("tfclip", "torchreid", "official")
QUERY_IN_GALLERY = {"tfclip": True, "torchreid": False, "official": True}
STANDARD_PROTOCOL = {"video": "tfclip", "image": "torchreid"}
_BLOCK_ELEMENTS = 1 << 22  # distance-matrix entries ranked per block (bounds peak memory)

ArrayLike = Union[np.ndarray, torch.Tensor]


def check_protocol(protocol: str) -> None:
    """Raise ``ValueError`` naming ``tfclip.protocol`` unless ``protocol`` is known."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"tfclip.protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")


def resolve_protocol(protocol: str, data_type: str) -> str:
    """``tfclip.protocol`` with '' replaced by the standard protocol of ``data_type`` ('video' | 'image');
    ``ValueError`` naming the key for an unknown protocol or data type."""
    if data_type not in STANDARD_PROTOCOL:
        raise ValueError(f"data.type must be one of {', '.join(STANDARD_PROTOCOL)}; got {data_type!r}")
    resolved = protocol or STANDARD_PROTOCOL[data_type]
    check_protocol(resolved)
    return resolved


def protocol_gallery(
    protocol: str,
    qf: torch.Tensor,
    gf: torch.Tensor,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
) -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The gallery a protocol ranks against: (features (G', D), pids (G',), camids (G',)).

    ``tfclip`` and ``official`` prepend the queries to the gallery; ``torchreid`` keeps the gallery.
    """
    check_protocol(protocol)
    if not QUERY_IN_GALLERY[protocol]:
        return gf, np.asarray(g_pids), np.asarray(g_camids)
    return (
        torch.cat([qf, gf], 0),
        np.concatenate([np.asarray(q_pids), np.asarray(g_pids)]),
        np.concatenate([np.asarray(q_camids), np.asarray(g_camids)]),
    )


def _ranked_blocks(distmat, q_pids, g_pids, q_camids, g_camids, label_junk: bool):
    """Yield, per block of queries, (hits (b, G) bool, kept_rank (b, G) int) in ranked order.

    ``kept_rank`` is the 0-based position among the non-junk entries; junk = same pid and camid as the
    query (and, with ``label_junk``, gallery label -1).
    """
    num_q, num_g = distmat.shape
    block = max(1, _BLOCK_ELEMENTS // max(num_g, 1))
    for start in range(0, num_q, block):
        stop = min(start + block, num_q)
        order = np.argsort(distmat[start:stop], axis=1, kind="stable")
        ranked_pids = g_pids[order]
        same_pid = ranked_pids == q_pids[start:stop, None]
        junk = same_pid & (g_camids[order] == q_camids[start:stop, None])
        if label_junk:
            junk |= ranked_pids == -1
        hits = same_pid & ~junk
        kept_rank = np.cumsum(~junk, axis=1) - 1
        yield hits, kept_rank


def _per_query(hits: np.ndarray, kept_rank: np.ndarray, interpolated: bool):
    """Per-query (num_matches, first-match rank, AP, INP) of one block; undefined where num_matches is 0."""
    num_rel = hits.sum(1)
    rows = np.arange(hits.shape[0])
    first = kept_rank[rows, hits.argmax(1)]
    last = kept_rank[rows, hits.shape[1] - 1 - hits[:, ::-1].argmax(1)]
    found = np.cumsum(hits, axis=1)  # i: matches up to and including this position
    position = np.maximum(kept_rank, 0)  # junk before the first kept entry has kept_rank -1
    precision = found / (position + 1.0)
    if interpolated:
        # compute_AP.m: each match adds (1/ngood) * (precision before + precision now) / 2, where
        # "precision before" is (i-1)/j at the previous non-junk position j (1.0 before the first one)
        before = np.where(position > 0, (found - 1) / np.maximum(position, 1), 1.0)
        precision = (before + precision) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(hits, precision, 0.0).sum(1) / num_rel
        inp = num_rel / (last + 1.0)
    return num_rel, first, ap, inp


def rank_metrics(
    distmat: np.ndarray,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    official: bool = False,
) -> Dict[str, object]:
    """CMC, mAP and mINP of a (Q, G) distance matrix.

    ``official=False``: the Market-1501 definition of torchreid's ``evaluate_rank`` (same-pid-same-cam
    removed, non-interpolated AP, queries without a match skipped). ``official=True``: the MARS MATLAB
    definition (label -1 junk too, interpolated AP, every query counted). The CMC has
    ``min(max_rank, G)`` entries.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_q, num_g = distmat.shape
    if (len(q_pids), len(g_pids)) != (num_q, num_g) or len(q_camids) != num_q or len(g_camids) != num_g:
        raise ValueError(
            f"distance matrix {distmat.shape} does not fit {len(q_pids)} query and {len(g_pids)} gallery ids"
        )
    max_rank = min(max_rank, num_g)
    num_rel, first, ap, inp = (np.concatenate(parts) for parts in zip(*(
        _per_query(hits, kept, official)
        for hits, kept in _ranked_blocks(distmat, q_pids, g_pids, q_camids, g_camids, label_junk=official)
    )))
    valid = num_rel > 0
    if not valid.any():
        raise ValueError("no query has a true match in the gallery (check the query/gallery identities)")
    cmc_rows = first[valid, None] <= np.arange(max_rank)[None, :]
    if official:
        denominator = num_q
        mean_ap, mean_inp = ap[valid].sum() / num_q, inp[valid].sum() / num_q
    else:
        denominator = int(valid.sum())
        mean_ap, mean_inp = ap[valid].mean(), inp[valid].mean()
    return {
        "cmc": cmc_rows.sum(0).astype(np.float64) / denominator,
        "mAP": float(mean_ap),
        "mINP": float(mean_inp),
        "num_valid_queries": int(valid.sum()),
        "num_query": int(num_q),
        "num_gallery": int(num_g),
    }


def evaluate_distmat(
    distmat: np.ndarray,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    protocol: str = "tfclip",
    max_rank: int = 50,
) -> Dict[str, object]:
    """Metrics of ``protocol`` for a distance matrix that already ranks against the protocol's gallery
    (:func:`protocol_gallery`): dict with 'cmc', 'mAP', 'mINP', 'num_valid_queries', 'num_query',
    'num_gallery', 'protocol'."""
    check_protocol(protocol)
    result = rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, official=protocol == "official")
    result["protocol"] = protocol
    return result


def evaluate(
    qf: ArrayLike,
    gf: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    protocol: str = "tfclip",
    max_rank: int = 50,
) -> Dict[str, object]:
    """Rank query features (Q, D) against gallery features (G, D) under ``protocol``.

    Distances are squared Euclidean (torchreid's ``compute_distance_matrix``); normalise the features
    first for the reference's setting. Returns the dict of :func:`evaluate_distmat`.
    """
    qf, gf = torch.as_tensor(qf).float(), torch.as_tensor(gf).float()
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    gallery, gallery_pids, gallery_camids = protocol_gallery(protocol, qf, gf, q_pids, g_pids, q_camids, g_camids)
    distmat = host.compute_distance_matrix(qf, gallery, "euclidean").numpy()
    return evaluate_distmat(distmat, q_pids, gallery_pids, q_camids, gallery_camids, protocol, max_rank)
