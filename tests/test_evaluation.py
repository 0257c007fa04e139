import numpy as np
import pytest
import torch

from tfclip_plugin import host
from dataset_fixtures import write_market1501
from tfclip_plugin.evaluation import evaluate, evaluate_distmat, protocol_gallery, rank_metrics, resolve_protocol

# Toy test set. Queries q0..q3, gallery g0..g3 as (pid, camid):
Q_PIDS, Q_CAMS = np.array([1, 2, 2, 4]), np.array([0, 0, 1, 0])
G_PIDS, G_CAMS = np.array([1, 3, 1, 1]), np.array([1, 1, 0, 2])
# Distances of each query to [q0 q1 q2 q3 | g0 g1 g2 g3] (query + gallery).
#   q0 (1, cam0): self 0 junk, g2 .1 junk (same pid+cam), g1 .2, q1 .3, q2 .4, q3 .45, g0 .5 HIT, g3 .9 HIT
#   q1 (2, cam0): self junk, g0 .1, q2 .15 HIT, g3 .2, q0 .3, q3 .65, g1 .7, g2 .8
#   q2 (2, cam1): self junk, g1 .05, g0 .35, q0 .4, q3 .5, q1 .6 HIT, g3 .7, g2 .9
#   q3 (4, cam0): identity 4 appears nowhere else
DIST = np.array([
    [0.0, 0.3, 0.4, 0.45, 0.5, 0.2, 0.1, 0.9],
    [0.3, 0.0, 0.15, 0.65, 0.1, 0.7, 0.8, 0.2],
    [0.4, 0.6, 0.0, 0.5, 0.35, 0.05, 0.9, 0.7],
    [0.5, 0.6, 0.7, 0.0, 0.1, 0.2, 0.3, 0.4],
])
ALL_PIDS, ALL_CAMS = np.concatenate([Q_PIDS, G_PIDS]), np.concatenate([Q_CAMS, G_CAMS])


def test_tfclip_protocol_on_toy_matrix():
    # kept ranks of matches: q0 -> 5th and 6th, q1 -> 2nd (its only match is the query q2), q2 -> 5th (query q1)
    r = evaluate_distmat(DIST, Q_PIDS, ALL_PIDS, Q_CAMS, ALL_CAMS, protocol="tfclip")
    ap = [(1 / 5 + 2 / 6) / 2, 1 / 2, 1 / 5]
    inp = [2 / 6, 1 / 2, 1 / 5]
    assert r["num_valid_queries"] == 3 and r["num_query"] == 4 and r["num_gallery"] == 8
    assert r["mAP"] == pytest.approx(np.mean(ap))
    assert r["mINP"] == pytest.approx(np.mean(inp))
    np.testing.assert_allclose(r["cmc"], [0, 1 / 3, 1 / 3, 1 / 3, 1, 1, 1, 1])


def test_torchreid_protocol_skips_queries_whose_match_is_a_query():
    # q0 vs g only: g2 junk, g1 .2, g0 .5 HIT, g3 .9 HIT -> matches at ranks 2 and 3; q1, q2, q3 have no match
    r = evaluate_distmat(DIST[:, 4:], Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, protocol="torchreid")
    assert r["num_valid_queries"] == 1
    assert r["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["mINP"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(r["cmc"], [0, 1, 1, 1])


def test_official_protocol_interpolates_ap_and_counts_every_query():
    # compute_AP.m: each match adds ((i-1)/j + i/(j+1)) / 2 / ngood at non-junk position j (0-based)
    r = evaluate_distmat(DIST, Q_PIDS, ALL_PIDS, Q_CAMS, ALL_CAMS, protocol="official")
    ap = [((0 / 4 + 1 / 5) / 2 + (1 / 5 + 2 / 6) / 2) / 2, (0 / 1 + 1 / 2) / 2, (0 / 4 + 1 / 5) / 2, 0.0]
    assert r["mAP"] == pytest.approx(sum(ap) / 4)
    assert r["mAP"] == pytest.approx(0.133333333)
    assert r["mINP"] == pytest.approx((2 / 6 + 1 / 2 + 1 / 5) / 4)
    np.testing.assert_allclose(r["cmc"], [0, 1 / 4, 1 / 4, 1 / 4, 3 / 4, 3 / 4, 3 / 4, 3 / 4])
    assert r["num_valid_queries"] == 3 and r["protocol"] == "official"


def test_official_protocol_treats_label_minus_one_as_junk():
    # gallery: pid -1 closest, then the match; Market counts -1 as a negative, the MATLAB code skips it
    dist = np.array([[0.1, 0.2, 0.3]])
    g_pids, g_cams = np.array([-1, 5, 6]), np.array([1, 1, 1])
    official = rank_metrics(dist, [5], g_pids, [0], g_cams, official=True)
    market = rank_metrics(dist, [5], g_pids, [0], g_cams, official=False)
    assert official["cmc"][0] == 1.0 and official["mAP"] == pytest.approx((1.0 + 1.0) / 2)
    assert market["cmc"][0] == 0.0 and market["mAP"] == pytest.approx(1 / 2)


def test_matches_at_the_top_give_ap_one_in_both_definitions():
    # ranked: g0 (match), g2 (match), g1
    dist = np.array([[0.1, 0.5, 0.2]])
    for official in (False, True):
        r = rank_metrics(dist, [1], [1, 2, 1], [0], [1, 1, 2], official=official)
        assert r["mAP"] == pytest.approx(1.0) and r["mINP"] == pytest.approx(1.0)
        np.testing.assert_allclose(r["cmc"], [1, 1, 1])


def test_evaluate_concatenates_queries_for_the_tfclip_protocol():
    rng = np.random.default_rng(0)
    qf, gf = torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), torch.randn(9, 4)
    q_pids, g_pids = rng.integers(0, 4, 6), rng.integers(0, 4, 9)
    q_cams, g_cams = rng.integers(0, 2, 6), rng.integers(0, 2, 9)
    g, gp, gc = protocol_gallery("tfclip", qf, gf, q_pids, g_pids, q_cams, g_cams)
    assert g.shape == (15, 4) and list(gp[:6]) == list(q_pids) and list(gc[6:]) == list(g_cams)
    dist = ((qf[:, None] - g[None]) ** 2).sum(-1).numpy()
    expected = evaluate_distmat(dist, q_pids, gp, q_cams, gc, "tfclip")
    got = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, protocol="tfclip")
    assert got["mAP"] == pytest.approx(expected["mAP"], rel=1e-6)
    np.testing.assert_allclose(got["cmc"], expected["cmc"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_market_definition_equals_torchreid_evaluate_rank(seed):
    rng = np.random.default_rng(seed)
    num_q, num_g = 40, 300
    distmat = rng.random((num_q, num_g)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 30, num_q), rng.integers(0, 30, num_g)
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    cmc, mAP = host.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50, use_cython=False)
    ours = rank_metrics(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    np.testing.assert_allclose(ours["cmc"], cmc, rtol=1e-6)
    assert ours["mAP"] == pytest.approx(mAP, rel=1e-9)


def test_mINP_is_matches_over_rank_of_hardest_match():
    # matches at ranks 1 and 4 -> INP = 2/4
    r = rank_metrics(np.array([[0.1, 0.2, 0.3, 0.4]]), [1], [1, 2, 3, 1], [0], [1, 1, 1, 1])
    assert r["mINP"] == pytest.approx(0.5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="tfclip.protocol must be one of"):
        evaluate_distmat(DIST, Q_PIDS, ALL_PIDS, Q_CAMS, ALL_CAMS, protocol="market")
    with pytest.raises(ValueError, match="no query has a true match"):
        rank_metrics(np.zeros((1, 2)), [7], [1, 2], [0], [0, 0])
    with pytest.raises(ValueError, match="does not fit"):
        rank_metrics(np.zeros((2, 3)), [1, 2], [1, 2], [0, 0], [0, 0, 0])


def test_empty_protocol_resolves_to_the_data_types_standard():
    assert resolve_protocol("", "video") == "tfclip" and resolve_protocol("", "image") == "torchreid"
    assert resolve_protocol("official", "image") == "official"  # an explicit protocol is kept
    with pytest.raises(ValueError, match="tfclip.protocol must be one of"):
        resolve_protocol("market", "image")
    with pytest.raises(ValueError, match="data.type must be one of video, image; got 'images'"):
        resolve_protocol("", "images")


def test_image_protocol_on_a_market1501_fixture(tmp_path):
    """torchreid's Market-1501 parser drops junk (-1) at parse time and keeps distractors (0000) in the gallery;
    the image protocol ranks each query against the gallery alone, without the gallery images of its own
    identity and camera."""
    write_market1501(str(tmp_path), {
        "bounding_box_train": [(1, 1), (1, 2)],
        "query": [(3, 1), (5, 2), (-1, 3)],
        "bounding_box_test": [(3, 1), (3, 2), (5, 2), (5, 3), (0, 1), (0, 5), (-1, 1), (-1, 4)],
    })
    dataset = host.data.datasets.init_image_dataset("market1501", root=str(tmp_path), mode="query", verbose=False)
    assert len(dataset.query) == 2 and len(dataset.gallery) == 6  # junk dropped, distractors kept
    e = torch.eye(5)
    query_features = {(3, 0): e[0], (5, 1): e[3]}
    gallery_features = {  # (pid, camera 0-based)
        (3, 0): e[0],                      # identical to query 3, same camera: removed
        (0, 0): 0.9 * e[0] + 0.1 * e[1],   # a distractor, ranked above query 3's true match
        (3, 1): 0.5 * e[0] + 0.5 * e[2],   # query 3's match in another camera: rank 2
        (5, 1): e[3],                      # identical to query 5, same camera: removed
        (5, 2): e[3] + 0.01 * e[4],        # query 5's match: rank 1
        (0, 4): e[4],
    }
    qf = torch.stack([query_features[(pid, cam)] for _, pid, cam, _ in dataset.query])
    gf = torch.stack([gallery_features[(pid, cam)] for _, pid, cam, _ in dataset.gallery])
    q_pids, q_cams = [item[1] for item in dataset.query], [item[2] for item in dataset.query]
    g_pids, g_cams = [item[1] for item in dataset.gallery], [item[2] for item in dataset.gallery]
    result = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, protocol=resolve_protocol("", "image"))
    assert (result["protocol"], result["num_query"], result["num_gallery"]) == ("torchreid", 2, 6)
    assert result["mAP"] == pytest.approx(0.75) and result["cmc"][0] == pytest.approx(0.5)
    assert result["cmc"][1] == pytest.approx(1.0) and result["mINP"] == pytest.approx(0.75)
    distmat = host.compute_distance_matrix(qf, gf, "euclidean").numpy()
    cmc, mean_ap = host.evaluate_rank(distmat, np.array(q_pids), np.array(g_pids), np.array(q_cams),
                                      np.array(g_cams), max_rank=6, use_metric_cuhk03=False)
    assert mean_ap == pytest.approx(result["mAP"]) and np.allclose(cmc, result["cmc"][:len(cmc)])
