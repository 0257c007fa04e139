"""``tfclip-reid report``: ranking, choice of queries, figure geometry, files and index.html of a run folder."""
import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tfclip_plugin import evaluation
from tfclip_plugin.report import build_report
from tfclip_plugin.report.builder import run_labels
from tfclip_plugin.report.events import read_scalars
from tfclip_plugin.files.test_outputs import TestOutputs, load_test_outputs
from tfclip_plugin.report.plots import _training_panels
from tfclip_plugin.report.ranked_figure import (
    CORRECT_COLOUR, QUERY_COLOUR, WRONG_COLOUR, RankedCell, RankedLayout, draw_ranked_results,
)
from tfclip_plugin.report.ranking import Gallery, Ranking, choose_queries, rank_gallery

TARGET = "synth"
NUM_IDS = 10
GALLERY_CAMS = (1, 2, 3)
MISPLACED = {2: 5, 4: 7, 8: 1}  # query identity -> identity its query lies close to
FRAME_SIZE = (64, 32)  # height, width of the fixture's JPEG frames


# ---------------------------------------------------------------- fixture run folder


def _frame_colour(pid: int, index: int) -> tuple:
    """Muted colours, far from the border colours, so that border pixels can be counted exactly."""
    return (90 + 11 * pid, 120 + 5 * index, 200 - 9 * pid)


def _write_tracklet(root, name: str, pid: int) -> list:
    paths = []
    for i in range(4):
        path = os.path.join(root, f"{name}_f{i}.jpg")
        Image.new("RGB", (FRAME_SIZE[1], FRAME_SIZE[0]), _frame_colour(pid, i)).save(path, quality=90)
        paths.append(path)
    return paths


def _normalise(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_run(run_dir, seed: int = 0, protocol: str = "tfclip", events: bool = True, feature_dim: int = 32,
              model: str = "tfclip_vit"):
    """A run folder as the engine leaves it: test_outputs/<TARGET>.npz, results.json, tensorboard events.

    Identity i has one query (camera 0) and one gallery tracklet per camera in GALLERY_CAMS, all near
    centroid i (orthonormal centroids), except that the queries of MISPLACED identities lie 70/30 between
    another identity's centroid and their own: rank-1 misses whose first true match comes after the other identity's three
    gallery tracklets (and its query, when the query is in the gallery).
    """
    rng = np.random.default_rng(seed)
    centroids = np.linalg.qr(rng.standard_normal((feature_dim, NUM_IDS)))[0].T  # orthonormal rows
    frames_dir = os.path.join(run_dir, "frames")
    os.makedirs(frames_dir)
    q_feats, q_pids, q_cams, q_frames = [], [], [], []
    g_feats, g_pids, g_cams, g_frames = [], [], [], []
    for pid in range(NUM_IDS):
        centre = 0.7 * centroids[MISPLACED[pid]] + 0.3 * centroids[pid] if pid in MISPLACED else centroids[pid]
        q_feats.append(centre + 0.01 * rng.standard_normal(feature_dim))
        q_pids.append(pid)
        q_cams.append(0)
        q_frames.append(_write_tracklet(frames_dir, f"q{pid}", pid))
        for cam in GALLERY_CAMS:
            g_feats.append(centroids[pid] + 0.01 * rng.standard_normal(feature_dim))
            g_pids.append(pid)
            g_cams.append(cam)
            g_frames.append(_write_tracklet(frames_dir, f"g{pid}c{cam}", pid))
    os.makedirs(os.path.join(run_dir, "test_outputs"))
    np.savez(
        os.path.join(run_dir, "test_outputs", f"{TARGET}.npz"),
        query_features=_normalise(np.array(q_feats)).astype(np.float16),
        gallery_features=_normalise(np.array(g_feats)).astype(np.float16),
        query_pids=np.array(q_pids, dtype=np.int64), query_camids=np.array(q_cams, dtype=np.int64),
        gallery_pids=np.array(g_pids, dtype=np.int64), gallery_camids=np.array(g_cams, dtype=np.int64),
        query_frames=np.array(q_frames), gallery_frames=np.array(g_frames), protocol=np.array(protocol),
    )
    results = {"config": {"model": {"name": model}, "tfclip": {"protocol": protocol}},
               "targets": {TARGET: {"protocol": protocol, "cmc": {"1": 0.7}, "mAP": 0.75}}}
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f)
    if events:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir))
        for step in range(6):
            writer.add_scalar("Train/loss_id", 2.0 - 0.25 * step, step)
            writer.add_scalar("Train/lr", 1e-5 * (step + 1), step)
            writer.add_scalar("Train/time", 0.1, step)
            writer.add_scalar("Train/acc_v2m", 0.1 * step, step)
        for epoch, (r1, m) in enumerate([(0.4, 0.3), (0.7, 0.6)]):
            writer.add_scalar(f"Test/{TARGET}/rank1", r1, epoch + 1)
            writer.add_scalar(f"Test/{TARGET}/mAP", m, epoch + 1)
        writer.close()
    return str(run_dir)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def built(run_dir):
    """The report of the fixture run with 6 queries and top-4."""
    return build_report([run_dir], topk=4, num_queries=6, seed=0)


# ---------------------------------------------------------------- ranking


def _unit(degrees):
    angles = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)


def _outputs(q_deg, q_pids, q_cams, g_deg, g_pids, g_cams, protocol="torchreid"):
    frames = lambda n, tag: np.array([[f"{tag}{i}"] * 4 for i in range(n)])  # noqa: E731
    return TestOutputs(
        target="t", path="t.npz", protocol=protocol,
        query_features=_unit(q_deg), query_pids=np.array(q_pids), query_camids=np.array(q_cams),
        query_frames=frames(len(q_pids), "q"),
        gallery_features=_unit(g_deg), gallery_pids=np.array(g_pids), gallery_camids=np.array(g_cams),
        gallery_frames=frames(len(g_pids), "g"),
    )


def test_rank_gallery_removes_same_identity_same_camera_and_orders_by_distance():
    out = _outputs([0, 100], [1, 2], [0, 0], [5, 10, 20, 90, 101], [1, 2, 1, 3, 2], [0, 1, 1, 1, 0])
    ranking = rank_gallery(out, "torchreid", topk=3)
    # query 0: gallery 0 (id 1, cam 0) is removed; then 10, 20, 90 degrees
    np.testing.assert_array_equal(ranking.indices[0], [1, 2, 3])
    np.testing.assert_allclose(ranking.distances[0], 2 - 2 * np.cos(np.radians([10, 20, 90])), atol=1e-5)
    np.testing.assert_array_equal(ranking.matches[0], [False, True, False])
    assert ranking.first_match[0] == 1
    gap = 2 * np.cos(np.radians(10)) - 2 * np.cos(np.radians(20))
    assert ranking.first_match_gap[0] == pytest.approx(gap, abs=1e-5)
    # query 1 (id 2, cam 0): gallery 4 (101 degrees, id 2 cam 0) removed, gallery 1 (id 2, cam 1) is at rank 4
    np.testing.assert_array_equal(ranking.indices[1], [3, 2, 1])
    assert ranking.first_match[1] == 2
    np.testing.assert_array_equal(ranking.gallery.frames[ranking.indices[0, 0]], ["g1"] * 4)


def test_rank_gallery_tfclip_protocol_ranks_query_plus_gallery_without_the_query_itself():
    out = _outputs([0, 3], [1, 1], [0, 1], [50], [1], [2], protocol="tfclip")
    ranking = rank_gallery(out, "tfclip", topk=5)
    # gallery = [q0, q1, g0]; query 0 drops itself (same id and camera), finds q1 then g0
    assert ranking.indices.shape == (2, 3)
    np.testing.assert_array_equal(ranking.indices[0], [1, 2, -1])
    np.testing.assert_array_equal(ranking.matches[0], [True, True, False])
    assert np.isinf(ranking.distances[0, 2])
    np.testing.assert_array_equal(ranking.gallery.frames[1], ["q1"] * 4)


def test_first_matches_give_the_cmc_of_evaluation(run_dir):
    outputs = load_test_outputs(os.path.join(run_dir, "test_outputs", f"{TARGET}.npz"))
    for protocol in ("tfclip", "torchreid"):
        ranking = rank_gallery(outputs, protocol, topk=5)
        metrics = evaluation.evaluate(outputs.query_features, outputs.gallery_features, outputs.query_pids,
                                      outputs.gallery_pids, outputs.query_camids, outputs.gallery_camids,
                                      protocol=protocol, max_rank=20)
        first = ranking.first_match[ranking.first_match >= 0]
        cmc = (first[:, None] < np.arange(1, 21)[None, :]).mean(0)
        np.testing.assert_allclose(cmc, metrics["cmc"], atol=1e-12)
        np.testing.assert_array_equal(np.flatnonzero(ranking.first_match > 0), sorted(MISPLACED))


def _ranking_with(first_match, gap):
    n = len(first_match)
    empty = np.zeros((n, 1))
    return Ranking(Gallery(None, empty, empty, empty), empty, empty, empty,
                   np.array(first_match), np.array(gap, dtype=np.float64))


def test_choose_queries_puts_worst_misses_first_then_seeded_hits():
    #            0   1  2  3   4  5  6   7  8  9
    first = [0, 3, 0, -1, 3, 0, 7, 0, 1, 0]
    gap = [0, .1, 0, np.nan, .5, 0, .2, 0, .3, 0]
    ranking = _ranking_with(first, gap)
    chosen = choose_queries(ranking, 6, seed=0)
    np.testing.assert_array_equal(chosen[:3], [6, 4, 1])  # rank 8, then rank 4 with the larger gap
    hits = chosen[3:]
    assert len(hits) == 3 and set(hits) <= {0, 2, 5, 7, 9} and list(hits) == sorted(hits)
    np.testing.assert_array_equal(choose_queries(ranking, 6, seed=0), chosen)
    draws = {tuple(choose_queries(ranking, 6, seed=s)[3:]) for s in range(20)}
    assert len(draws) > 1  # the seed picks the hits
    # short of hits or misses, the other kind fills the rows; query 3 (no match) is never shown
    np.testing.assert_array_equal(choose_queries(ranking, 9, seed=1)[:4], [6, 4, 1, 8])
    assert len(choose_queries(ranking, 20, seed=1)) == 9 and 3 not in choose_queries(ranking, 20, seed=1)


# ---------------------------------------------------------------- ranked figure geometry


def _rings(image: Image.Image, colour, layout: RankedLayout) -> list:
    """Top-left corners of the border rings of one colour (connected pixels of exactly that colour)."""
    mask = np.all(np.asarray(image) == np.array(colour, dtype=np.uint8), axis=2)
    labels, count = ndimage.label(mask)
    ring_area = layout.cell_width * layout.cell_height - (layout.cell_width - 2 * layout.border) * (
        layout.cell_height - 2 * layout.border)
    corners = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        area = int((labels[box] == index).sum())
        height, width = box[0].stop - box[0].start, box[1].stop - box[1].start
        assert (width, height, area) == (layout.cell_width, layout.cell_height, ring_area)
        corners.append((box[1].start, box[0].start))
    return sorted(corners)


def test_layout_size_of_the_default_figure():
    layout = RankedLayout(num_rows=8, topk=5)
    assert (layout.cell_width, layout.cell_height) == (136, 72)
    # 2*8 margin + 6 cells + 18 query gap + 4*6 gaps; 2*8 margin + 14 header + 8*(72+14) + 7*8 row gaps
    assert layout.size == (874, 774)
    assert layout.cell_origin(1, 2) == (8 + 136 + 18 + 136 + 6, 8 + 14 + 72 + 14 + 8)


def test_draw_ranked_results_borders_every_cell_in_its_colour(run_dir):
    frames = [os.path.join(run_dir, "frames", f"g{p}c1_f{i}.jpg") for p in (1, 2) for i in range(4)]
    rows = [
        [RankedCell(frames[:4], "id 1 cam 0", QUERY_COLOUR), RankedCell(frames[:4], "0.1", CORRECT_COLOUR),
         RankedCell(frames[4:], "0.2", WRONG_COLOUR)],
        [RankedCell(frames[4:], "id 2 cam 0", QUERY_COLOUR), RankedCell(frames[:4], "0.3", WRONG_COLOUR)],
    ]
    layout = RankedLayout(num_rows=2, topk=2, frame_height=48, frame_width=24, border=3)
    image, missing = draw_ranked_results(rows, layout)
    assert missing == [] and image.size == layout.size == (2 * 8 + 3 * 102 + 18 + 6, 2 * 8 + 14 + 2 * 68 + 8)
    assert _rings(image, QUERY_COLOUR, layout) == [layout.cell_origin(0, 0), layout.cell_origin(1, 0)]
    assert _rings(image, CORRECT_COLOUR, layout) == [layout.cell_origin(0, 1)]
    assert _rings(image, WRONG_COLOUR, layout) == sorted([layout.cell_origin(0, 2), layout.cell_origin(1, 1)])
    # the empty rank-2 slot of row 1 stays background; frame 2 of the first strip is the fixture's colour
    x, y = layout.cell_origin(1, 2)
    assert image.getpixel((x + 10, y + 10)) == (255, 255, 255)
    x, y = layout.cell_origin(0, 0)
    pixel = image.getpixel((x + 3 + 2 * 24 + 12, y + 3 + 24))
    assert np.abs(np.array(pixel) - _frame_colour(1, 2)).max() <= 3


def test_missing_frames_are_grey_and_reported(tmp_path):
    layout = RankedLayout(num_rows=1, topk=1)
    missing_path = str(tmp_path / "gone.jpg")
    image, missing = draw_ranked_results(
        [[RankedCell([missing_path] * 4, "q", QUERY_COLOUR), RankedCell([missing_path] * 4, "0.5", WRONG_COLOUR)]],
        layout)
    assert missing == [missing_path]
    x, y = layout.cell_origin(0, 1)
    assert image.getpixel((x + 20, y + 20)) == (150, 150, 150)


# ---------------------------------------------------------------- the report of a run folder


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("src", "href")]


def _links(path):
    parser = _Links()
    with open(path, encoding="utf-8") as f:
        parser.feed(f.read())
    return parser.links


def test_report_writes_every_figure_and_the_page(run_dir, built):
    report = os.path.join(run_dir, "report")
    names = {"ranked_synth.png", "cmc_synth.png", "feature_map_synth.png", "training_curves.png", "index.html"}
    assert sorted(built) == sorted(os.path.join(report, n) for n in names)
    assert set(os.listdir(report)) == names
    # matplotlib figures: figsize x dpi 100 (one panel of 4.2 x 3.6; 4.6 x (4.2 + 0.9); four of 4.2 x 3.4)
    assert Image.open(os.path.join(report, "cmc_synth.png")).size == (420, 360)
    assert Image.open(os.path.join(report, "feature_map_synth.png")).size == (460, 510)
    assert Image.open(os.path.join(report, "training_curves.png")).size == (1680, 340)


def test_ranked_figure_shows_misses_first_with_the_expected_borders(run_dir, built):
    image = Image.open(os.path.join(run_dir, "report", "ranked_synth.png")).convert("RGB")
    layout = RankedLayout(num_rows=6, topk=4)
    assert image.size == layout.size
    queries = _rings(image, QUERY_COLOUR, layout)
    correct = _rings(image, CORRECT_COLOUR, layout)
    wrong = _rings(image, WRONG_COLOUR, layout)
    assert queries == [layout.cell_origin(r, 0) for r in range(6)]
    # rows 0-2: the three misplaced queries, four wrong tracklets each (their own gallery starts at rank 5);
    # rows 3-5: hits, the three gallery tracklets of the identity, then another identity
    assert wrong == sorted([layout.cell_origin(r, c) for r in range(3) for c in range(1, 5)]
                           + [layout.cell_origin(r, 4) for r in range(3, 6)])
    assert correct == sorted(layout.cell_origin(r, c) for r in range(3, 6) for c in range(1, 4))


def test_index_html_references_only_files_that_exist(run_dir, built):
    report = os.path.join(run_dir, "report")
    links = _links(os.path.join(report, "index.html"))
    files = [link for link in links if not link.startswith("#")]
    assert files and all(os.path.isfile(os.path.join(report, link)) for link in files)
    assert not any("://" in link or os.path.isabs(link) for link in links)
    assert {f for f in os.listdir(report) if f.endswith(".png")} == set(files)
    page = open(os.path.join(report, "index.html"), encoding="utf-8").read()
    assert "tfclip_vit" in page and "&quot;protocol&quot;: &quot;tfclip&quot;" in page
    assert "first true match at rank 5, 5, 5" in page


def test_results_table_recomputes_every_protocol(run_dir, built):
    page = open(os.path.join(run_dir, "report", "index.html"), encoding="utf-8").read()
    # 7 of 10 queries are rank-1 hits under tfclip/torchreid; all identities have a match, so official agrees
    assert page.count('<td class="num">70.0</td>') >= 3
    assert "tfclip (the run&#x27;s)" in page and "torchreid" in page and "official" in page


def test_same_seed_same_figure_and_cli_prints_paths(tmp_path, capsys):
    from tfclip_plugin.cli import main

    run = write_run(tmp_path / "r", events=False)
    first = build_report([run], topk=3, num_queries=4, seed=3)
    ranked = np.asarray(Image.open(os.path.join(run, "report", "ranked_synth.png")))
    assert main(["report", run, "--topk", "3", "--queries", "4", "--seed", "3"]) == 0
    assert capsys.readouterr().out.split() == first
    np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(run, "report", "ranked_synth.png"))), ranked)
    assert "training_curves.png" not in os.listdir(os.path.join(run, "report"))
    assert "no tensorboard scalars" in open(os.path.join(run, "report", "index.html"), encoding="utf-8").read()


def test_several_runs_share_comparison_figures(tmp_path):
    run_a = write_run(tmp_path / "a" / "tfclip", seed=0, events=False)
    run_b = write_run(tmp_path / "b" / "tfclip", seed=1, protocol="torchreid", events=False, model="osnet_x0_25")
    paths = build_report([run_a, run_b], topk=2, num_queries=2, seed=0, num_identities=4)
    for run in (run_a, run_b):
        report = os.path.join(run, "report")
        for name in ("cmc_runs_synth.png", "feature_map_runs_synth.png"):
            assert os.path.join(report, name) in paths
        # three protocol panels of 4.2 x 3.6 inches; two t-SNE panels of 4.6 x 4.2
        assert Image.open(os.path.join(report, "cmc_runs_synth.png")).size == (1260, 360)
        assert Image.open(os.path.join(report, "feature_map_runs_synth.png")).size == (920, 420)
        page = open(os.path.join(report, "index.html"), encoding="utf-8").read()
        assert "CMC of a/tfclip (tfclip_vit), b/tfclip (osnet_x0_25)" in page
        assert all(os.path.isfile(os.path.join(report, link)) for link in _links(os.path.join(report, "index.html"))
                   if not link.startswith("#"))
    # a later report of one run removes the comparison files of the earlier one, and nothing else
    open(os.path.join(run_a, "report", "notes.txt"), "w").close()
    build_report([run_a], topk=2, num_queries=2, seed=0, num_identities=4)
    assert sorted(os.listdir(os.path.join(run_a, "report"))) == [
        "cmc_synth.png", "feature_map_synth.png", "index.html", "notes.txt", "ranked_synth.png"]


def test_run_labels_are_short_unique_and_name_the_model():
    assert run_labels(["log/tfclip", "log/base"], ["tfclip_vit", None]) == ["tfclip (tfclip_vit)", "base"]
    assert run_labels(["x/a/run", "x/b/run"], ["resnet50", "resnet50"]) == ["a/run (resnet50)", "b/run (resnet50)"]
    assert run_labels(["log/osnet_x0_25", "log/osnet_x0_25"], ["osnet_x0_25"] * 2) == [
        "osnet_x0_25 [1]", "osnet_x0_25 [2]"]


def test_read_scalars_returns_every_tag_in_step_order(run_dir):
    scalars = read_scalars(run_dir)
    assert set(scalars) == {"Train/loss_id", "Train/lr", "Train/time", "Train/acc_v2m", f"Test/{TARGET}/rank1",
                            f"Test/{TARGET}/mAP"}
    steps, values = scalars["Train/loss_id"]
    np.testing.assert_array_equal(steps, np.arange(6))
    np.testing.assert_allclose(values, 2.0 - 0.25 * np.arange(6))
    np.testing.assert_array_equal(scalars[f"Test/{TARGET}/rank1"][0], [1, 2])


def test_training_panels_sort_tags_by_kind(run_dir):
    panels = _training_panels(read_scalars(run_dir))
    assert {title: (sorted(curves), xlabel, percent) for title, (curves, xlabel, percent) in panels.items()} == {
        "losses": (["loss_id"], "iteration", False),
        "training accuracy (%)": (["acc_v2m"], "iteration", True),
        "learning rate": (["lr"], "iteration", False),
        "evaluation (%)": ([f"{TARGET}/mAP", f"{TARGET}/rank1"], "epoch", True),
    }


# ---------------------------------------------------------------- bad input


def test_run_without_test_outputs_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"test_outputs: no <target>.npz files.*save_test_outputs"):
        build_report([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="run folder not found: .*nope"):
        build_report([str(tmp_path / "nope")])
    os.makedirs(tmp_path / "split0" / "test_outputs")
    with pytest.raises(FileNotFoundError, match=r"several splits .*report the split folders \(.*split0, \.\.\.\)"):
        build_report([str(tmp_path)])


def test_bad_arguments_are_refused(run_dir):
    with pytest.raises(ValueError, match="at least one run folder"):
        build_report([])
    with pytest.raises(ValueError, match="must be at least 1; got 0, 8, 20"):
        build_report([run_dir], topk=0)


def test_bad_npz_names_file_and_key(tmp_path):
    run = write_run(tmp_path / "r", events=False)
    path = os.path.join(run, "test_outputs", f"{TARGET}.npz")
    arrays = dict(np.load(path))
    del arrays["gallery_camids"]
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"synth.npz: missing array\(s\) gallery_camids"):
        load_test_outputs(path)
    arrays["gallery_camids"] = np.zeros(3, dtype=np.int64)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"synth.npz: gallery_camids must be \(30,\) integers"):
        load_test_outputs(path)
    arrays["gallery_camids"] = np.zeros(30, dtype=np.int64)
    arrays["protocol"] = np.array("market")
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"synth.npz: unknown protocol 'market'; expected one of tfclip"):
        load_test_outputs(path)


def test_missing_frames_warn_once_per_run(tmp_path):
    run = write_run(tmp_path / "r", events=False)
    for name in os.listdir(os.path.join(run, "frames")):
        os.remove(os.path.join(run, "frames", name))
    with pytest.warns(UserWarning, match=r"frame file\(s\) not found, drawn grey"):
        build_report([run], topk=2, num_queries=2, num_identities=3)


# ---------------------------------------------------------------- end to end


def test_report_of_a_short_synthvid_run(tmp_path):
    """Generate a small synthvid, train a tiny TF-CLIP for one epoch, test it, report the run folder."""
    from tfclip_plugin.config import get_default_config
    from tfclip_plugin.data import generate_synthvid
    from tfclip_plugin.engine.runner import run_experiment

    root, save_dir = str(tmp_path / "data"), str(tmp_path / "run")
    generate_synthvid(root, seed=0, num_train_ids=8, num_test_ids=8, max_frames=16, num_junk=2, num_distractors=2)
    cfg = get_default_config()
    cfg.model.name, cfg.model.pretrained = "tfclip_vit", False
    cfg.data.sources, cfg.data.targets, cfg.data.root = ["synthvid"], ["synthvid"], root
    cfg.data.height, cfg.data.width, cfg.data.workers, cfg.data.save_dir = 64, 32, 0, save_dir
    cfg.train.max_epoch, cfg.train.lr, cfg.train.stepsize = 1, 3e-4, [1]
    cfg.tfclip.vision_width, cfg.tfclip.vision_layers, cfg.tfclip.embed_dim = 64, 2, 64
    cfg.tfclip.warmup_epochs = 1
    results = run_experiment(cfg)

    paths = build_report([save_dir], topk=3, num_queries=4, seed=0)
    report = os.path.join(save_dir, "report")
    names = ["ranked_synthvid.png", "cmc_synthvid.png", "feature_map_synthvid.png", "training_curves.png",
             "index.html"]
    assert paths == [os.path.join(report, n) for n in names]

    outputs = load_test_outputs(os.path.join(save_dir, "test_outputs", "synthvid.npz"))
    summary = results["results"]["synthvid"]
    assert (outputs.num_query, outputs.protocol) == (summary["num_query"], "tfclip")
    assert outputs.num_query + outputs.num_gallery == summary["num_gallery"]
    assert all(os.path.isfile(p) for p in outputs.query_frames.ravel())
    # the report's metrics come from the saved float16 features; results.json's from the float32 ones
    recomputed = evaluation.evaluate(outputs.query_features, outputs.gallery_features, outputs.query_pids,
                                     outputs.gallery_pids, outputs.query_camids, outputs.gallery_camids)
    assert recomputed["mAP"] == pytest.approx(summary["mAP"], abs=0.02)

    ranking = rank_gallery(outputs, "tfclip", topk=3)
    chosen = choose_queries(ranking, 4, seed=0)
    layout = RankedLayout(num_rows=4, topk=3)
    image = Image.open(paths[0]).convert("RGB")
    assert image.size == layout.size == (2 * 8 + 4 * 136 + 18 + 2 * 6, 2 * 8 + 14 + 4 * 86 + 3 * 8)
    assert len(_rings(image, QUERY_COLOUR, layout)) == 4
    assert len(_rings(image, CORRECT_COLOUR, layout)) == int(ranking.matches[chosen].sum())
    assert len(_rings(image, WRONG_COLOUR, layout)) == 12 - int(ranking.matches[chosen].sum())
    links = [link for link in _links(paths[-1]) if not link.startswith("#")]
    assert set(links) == set(names[:-1])
