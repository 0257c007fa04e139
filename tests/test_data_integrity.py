"""Frames checked before a run depends on them: existence when a dataset is parsed, decoding with check-data."""
import os
import os.path as osp

import pytest

from dataset_fixtures import write_corrupt_frame, write_ilidsvid, write_mars
from tfclip_plugin import host
from tfclip_plugin.cli import main
from tfclip_plugin.data import TrackletSamplingMixin, integrity
from tfclip_plugin.data.datasets import CORRECTED_DATASETS, VIDEO_DATASETS
from tfclip_plugin.data.integrity import MissingFramesError, check_listed_frames, missing_paths
from tfclip_plugin.data.transforms import build_sequence_transforms

TRAIN = [(1, 1, 9), (1, 2, 5), (4, 1, 12), (4, 3, 8)]
TEST = [(2, 1, 6), (2, 3, 7), (5, 2, 5), (5, 1, 4)]


def build(name, root, **kwargs):
    _, test = build_sequence_transforms(8, 4, [])
    return host.data.datasets.init_video_dataset(name, root=str(root), transform=test, mode="train", seq_len=8,
                                                 sample_method="rrs", verbose=False, **kwargs)


@pytest.fixture
def mars(tmp_path):
    return str(tmp_path), write_mars(str(tmp_path), TRAIN, TEST, query_rows=[0, 2])


def test_missing_frames_are_reported_at_parse_time_with_counts_per_split(mars):
    root, written = mars
    gone = [written["train"][0][0][3], written["train"][2][0][11], written["test"][1][0][0]]  # train x2, gallery
    for path in gone:
        os.remove(path)
    with pytest.raises(MissingFramesError) as caught:
        build("mars", root)
    message = str(caught.value)
    assert message.startswith("Mars: 3 listed frames missing on disk (train 2, gallery 1); first: "
                              f"{gone[0]}, {gone[1]}, {gone[2]}. The dataset is incomplete")
    with pytest.warns(UserWarning, match=r"3 listed frames missing .*tfclip.skip_bad_frames: each is replaced"):
        dataset = build("mars", root, skip_bad_frames=True)
    assert len(dataset.train) == 4


def test_a_missing_person_folder_makes_all_its_frames_missing_and_lists_are_checked_once(tmp_path):
    folder = tmp_path / "person"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    listed = [str(folder / "a.jpg"), str(folder / "b.jpg"), str(tmp_path / "other" / "c.jpg"), str(folder / "b.jpg")]
    assert missing_paths(listed) == listed[1:3]
    splits = {"train": [((str(folder / "a.jpg"),), 0, 0)]}
    check_listed_frames("toy", splits)
    os.remove(folder / "a.jpg")
    check_listed_frames("toy", splits)  # the same lists pass once per process: a dataset is parsed per split
    with pytest.raises(MissingFramesError, match=r"toy: 1 listed frame missing on disk \(query 1\)"):
        check_listed_frames("toy", {"train": [], "query": splits["train"]})


def test_existence_check_runs_for_every_dataset_class(tmp_path, monkeypatch):
    assert all(issubclass(cls, TrackletSamplingMixin) for cls in {**VIDEO_DATASETS, **CORRECTED_DATASETS}.values())
    checked = []
    monkeypatch.setattr(integrity, "check_listed_frames", lambda name, splits, warn_only: checked.append(
        (name, {split: len(items) for split, items in splits.items()})))
    write_ilidsvid(str(tmp_path), [(3, 2)] * 300)
    build("ilidsvid", tmp_path)
    build("ilidsvid_tfclip", tmp_path)
    assert checked == [("iLIDSVID", {"train": 300, "query": 150, "gallery": 150}),
                       ("iLIDSVIDTFCLIP", {"train": 300, "query": 150, "gallery": 150})]


def test_check_data_decodes_every_frame_and_lists_the_unreadable_ones(mars, capsys):
    root, written = mars
    assert main(["check-data", "-s", "mars", "--root", root, "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "mars: 56 frames decoded in" in out and ", 0 unreadable" in out
    corrupt = written["test"][2][0][1]
    write_corrupt_frame(corrupt)
    absent = written["train"][1][0][4]
    os.remove(absent)
    assert main(["check-data", "-s", "mars", "--root", root, "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert "mars: 56 frames decoded in" in out and ", 2 unreadable" in out
    assert f"  frame listed by the dataset but absent on disk: {absent}" in out
    assert f"  cannot read frame {corrupt}: " in out
    assert main(["check-data", "-s", "mars", "--root", root, "--workers", "1"]) == 1  # in this process
    assert main(["check-data", "-s", "marz", "--root", root]) == 2
    assert "unknown video dataset 'marz'" in capsys.readouterr().err
    assert osp.isfile(corrupt)
