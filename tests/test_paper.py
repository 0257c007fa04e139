"""``tfclip-reid paper``: the rows of the supplement's Tables 1-7, their options, parameter counts, a run and the
comparison with the paper."""
import dataclasses
import json
import os

import pytest

from tfclip_plugin.cli import main
from tfclip_plugin.files.results import load_results
from tfclip_plugin.paper import (REQUIREMENTS, ROWS, PaperError, Requirement, equivalent_rows, find_row,
                                 row_complexity, run_row)
from tfclip_plugin.paper.commands import compare, matches_printed

EXPECTED_ROWS = {
    "1": ["baseline-cnn", "tfclip-cnn", "baseline-vit", "tfclip-vit"],
    "2": ["clipreid", "clip-m", "clip-m+ssp"],
    "3": ["A1", "A2", "A3", "A4", "A5", "A6"],
    "4": ["B1", "B2", "B3", "B4", "B5", "B6"],
    "5": ["tap", "conv1d", "transf_cls", "transf", "tmd"],
    "6": ["N1", "N2", "N3", "N4"],
    "7": ["B2", "B2-wo-clip-m", "B4", "B4-wo-clip-m"],
}
EXPECTED_DATASETS = {"2": ["market1501", "msmt17"], "4": ["mars", "lsvid"]}
TINY = {
    "tfclip_vit": ["tfclip.vision_width", "64", "tfclip.vision_layers", "1", "tfclip.embed_dim", "64",
                   "data.height", "64", "data.width", "32"],
    "tfclip_rn50": ["tfclip.vision_width", "16", "tfclip.vision_layers", "1", "tfclip.embed_dim", "64",
                    "data.height", "64", "data.width", "32"],
}


def test_every_table_and_row_of_the_supplement_with_the_paper_numbers():
    for table, names in EXPECTED_ROWS.items():
        rows = [r for r in ROWS if r.table == table]
        assert list(dict.fromkeys(r.row for r in rows)) == names, table
        datasets = EXPECTED_DATASETS.get(table, ["mars"])
        assert [(r.row, r.dataset) for r in rows] == [(n, d) for n in names for d in datasets], table
    assert len(ROWS) == 41
    assert find_row("3", "A2").paper == {"mAP": 88.8, "rank1": 91.9, "params_m": 89.93, "gflops": 11.26}
    assert find_row("4", "B6", "lsvid").paper == {"mAP": 83.8, "rank1": 90.4, "rank5": 97.1, "params_m": 104.26,
                                                  "gflops": 12.53}
    assert find_row("2", "clip-m+ssp", "msmt17").paper == {"mAP": 73.9, "rank1": 88.5}
    assert find_row("6", "N4").paper["params_m"] == 100.51 and find_row("5", "transf_cls").paper["gflops"] == 11.41
    assert find_row("7", "B4-wo-clip-m").paper == {"mAP": 87.3, "rank1": 91.0}
    assert find_row("1", "baseline-cnn").paper == {"mAP": 83.9, "rank1": 89.0}


def test_rows_map_to_the_documented_options():
    assert find_row("3", "A2").options == ("tfclip.ssp", "none", "tfclip.temporal", "tmc")
    assert find_row("3", "A5").options == ("tfclip.ssp", "paper", "tfclip.ssp_residual", "pre-release",
                                           "tfclip.temporal", "tmc")
    assert find_row("6", "N3").options[-4:] == ("tfclip.ssp_layers", "3", "tfclip.temporal", "tap")
    assert find_row("7", "B2-wo-clip-m").options == ("tfclip.memory", "False", "tfclip.temporal", "tap")
    assert find_row("1", "tfclip-vit").options == () and find_row("1", "tfclip-vit").recipe == "tfclip_vit_mars"
    assert find_row("4", "B1").requires == ("text-branch",) and "tfclip.memory" in find_row("4", "B1").options
    assert find_row("2", "clip-m", "market1501").recipe == "tfclip_vit_clipm_market1501"
    assert all(r.requires for r in ROWS if r.table == "2")
    with pytest.raises(KeyError, match="table 3 has no row 'A7'; its rows: A1, A2, A3, A4, A5, A6"):
        find_row("3", "A7")
    with pytest.raises(KeyError, match="reported on mars, lsvid, not 'ilidsvid'"):
        find_row("4", "B2", "ilidsvid")


def test_every_available_row_parses_and_builds_at_tiny_size():
    for row in ROWS:
        missing = row.missing_requirements()
        model = "tfclip_rn50" if "rn50" in row.recipe else "tfclip_vit"
        ours = row_complexity(row, TINY[model])
        if missing:
            assert ours == {"unavailable": "needs " + "; ".join(r.description for r in missing)}, row
            continue
        assert "error" not in ours, (row, ours)
        assert ours["params"] > 0 and set(ours) >= {"gmacs_per_frame", "params_paper_convention"}, row
    tiny = {r.row: row_complexity(r, TINY["tfclip_vit"])["params"] for r in ROWS if r.table == "3"}
    assert tiny["A1"] < tiny["A2"] < tiny["A3"] and tiny["A4"] < tiny["A5"] < tiny["A6"]  # TMC, then MD


# Full-size rows checked here, one per counting rule (the others are in `paper list`): the paper's count
# reconstructed from the model we build, to its two printed decimals.
CHECKED_FULL_SIZE = [("3", "A1", 86_947_584), ("3", "A4", 94_213_376), ("3", "A5", 97_167_872),
                     ("3", "A6", 104_255_744), ("6", "N4", 100_515_072), ("5", "conv1d", 87_309_568),
                     ("5", "transf_cls", 106_228_480)]


@pytest.mark.parametrize("table,row,paper_convention", CHECKED_FULL_SIZE)
def test_full_size_parameter_counts_reconstruct_the_paper(table, row, paper_convention):
    ours = row_complexity(find_row(table, row))
    assert ours["params_paper_convention"] == paper_convention
    assert ours["params_match_paper"] is True and ours["gmacs_per_frame"] == 11.26


def test_printed_counts_round_or_truncate():
    assert matches_printed(104_255_744, 104.26) and matches_printed(100_515_072, 100.51)
    assert matches_printed(86_947_584, 86.94) and not matches_printed(97_473_024, 97.02)


@pytest.fixture
def text_branch_missing(monkeypatch):
    monkeypatch.setitem(REQUIREMENTS, "text-branch", Requirement("text-branch", "the text branch", lambda: False))


def test_rows_needing_a_missing_feature_fail_before_anything_is_built(text_branch_missing, tmp_path, capsys):
    with pytest.raises(PaperError, match=r"table 4 row B5 \(lsvid\) needs the text branch, which this installation "
                                         r"does not have; its options: tfclip.memory text .* recipe tfclip_vit_lsvid"):
        run_row("4", "B5", str(tmp_path), "lsvid", log_dir=str(tmp_path / "log"))
    assert not (tmp_path / "log").exists()
    assert main(["paper", "run", "1", "baseline-vit", "--root", str(tmp_path)]) == 2
    assert "needs the text branch" in capsys.readouterr().err
    assert main(["paper", "list", "--table", "4", "--no-ours"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["row"], e["dataset"]) for e in listed][:2] == [("B1", "mars"), ("B1", "lsvid")]
    assert listed[2]["row"] == "B2" and listed[2]["same_as"] == ["3/A1", "5/tap", "7/B2"]
    assert [r.row for r in equivalent_rows(find_row("6", "N2"))] == ["A4", "B3"]
    assert [r.row for r in equivalent_rows(find_row("4", "B1"))] == ["baseline-vit"]  # by its tokens until it parses
    assert equivalent_rows(find_row("4", "B6", "lsvid")) == [] and equivalent_rows(find_row("1", "tfclip-vit")) == []
    assert {e["row"] for e in listed if not e["available"]} == {"B1", "B5"} and all("ours" not in e for e in listed)


def test_paper_run_trains_a_row_and_compare_puts_it_beside_the_paper(data_root, tmp_path, capsys):
    log_dir = str(tmp_path / "paper")
    tiny = ["model.pretrained", "False", "tfclip.clip_weights", "", "data.sources", "['synthvid']",
            "data.targets", "['synthvid']", "data.workers", "0", "train.max_epoch", "1", "train.lr", "3e-4",
            "tfclip.warmup_epochs", "1", "tfclip.precision", "fp32", "video.seq_len", "4", "test.batch_size", "16",
            *TINY["tfclip_vit"]]
    assert main(["paper", "run", "3", "A2", "--root", data_root, "--log-dir", log_dir, *tiny]) == 0
    run = os.path.join(log_dir, "table3", "A2_mars")
    results = load_results(run)
    assert results["config"]["tfclip"]["temporal"] == "tmc" and results["config"]["tfclip"]["ssp"] == "none"
    assert results["epochs"] == 1 and results["targets"] == ["synthvid"]
    record = json.load(open(os.path.join(run, "paper_row.json")))
    assert record["options"] == ["tfclip.ssp", "none", "tfclip.temporal", "tmc"] and record["overrides"] == tiny
    capsys.readouterr()
    assert main(["paper", "compare", log_dir]) == 0
    out = capsys.readouterr().out
    markdown, json_lines = out.split("\n\n", 1)
    entries = [json.loads(line) for line in json_lines.splitlines()]
    assert len(entries) == len(ROWS) and len(markdown.splitlines()) == 2 + len(ROWS)
    a2 = next(e for e in entries if (e["table"], e["row"]) == ("3", "A2"))
    synthvid = results["results"]["synthvid"]
    assert a2["ours"] == {"mAP": round(100 * synthvid["mAP"], 2), "rank1": round(100 * synthvid["cmc"]["1"], 2),
                          "rank5": round(100 * synthvid["cmc"]["5"], 2)}
    assert a2["paper"] == {"mAP": 88.8, "rank1": 91.9}
    assert a2["status"].startswith("run; tested on synthvid, not mars; overrides: model.pretrained False")
    assert all(e["status"] == "not run" and e["ours"] is None for e in entries if e is not a2)
    os.rename(run, os.path.join(log_dir, "table3", "A1_mars"))  # as if A1 had been run: B2, tap, 7/B2 share it
    _, entries = compare(log_dir)
    shared = {(e["table"], e["row"]) for e in entries if e["ours"] is not None}
    assert shared == {("3", "A1"), ("4", "B2"), ("5", "tap"), ("7", "B2")}
    b2 = next(e for e in entries if (e["table"], e["row"], e["dataset"]) == ("4", "B2", "mars"))
    assert b2["status"].startswith("run; the run of table 3 A1; tested on synthvid") and b2["run_dir"].endswith(
        os.path.join("table3", "A1_mars"))
    row_line = next(line for line in markdown.splitlines() if line.startswith("| 3 | A2 | mars |"))
    assert f"| 88.8 | {100 * synthvid['mAP']:.1f} | 91.9 |" in row_line
    table, _ = compare(str(tmp_path / "empty"))
    assert table.count("not run") == len(ROWS)


def test_paper_run_keeps_its_folder(tmp_path):
    with pytest.raises(PaperError, match="choose the parent folder with --log-dir, not data.save_dir"):
        run_row("3", "A1", str(tmp_path), overrides=["data.save_dir", str(tmp_path)])


@pytest.mark.parametrize("table, row, recipe", [("4", "B1", "clipreid_vit_mars"), ("4", "B5", "clipreid_tmd_vit_mars"),
                                                ("1", "baseline-cnn", "clipreid_rn50_mars")])
def test_text_branch_rows_equal_their_shipped_recipes(table, row, recipe):
    from tfclip_plugin.paper.commands import row_config

    built = row_config(find_row(table, row, "mars"))
    shipped = row_config(dataclasses.replace(find_row(table, row, "mars"), recipe=recipe, options=()))
    shipped.data.save_dir = built.data.save_dir
    assert built == shipped
