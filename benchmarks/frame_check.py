"""Cost of the parse-time frame-existence check on a MARS-sized list (``data.integrity.missing_paths``).

Writes ``--frames`` empty files in MARS's layout (``bbox_train|bbox_test/<pid4>/<name>.jpg``, ``--folders``
person folders) under ``--root`` (kept for reruns), then times, on the same path list:

- ``scandir``: ``missing_paths`` (one directory listing per folder, what the datasets run);
- ``stat``: one ``os.stat`` per path (``os.path.exists``);
- ``check``: the whole parse-time check (``check_listed_frames`` on the paths as 150-frame tracklets);
- the same two with ``--drop`` paths removed from the list's folders (the report's cost when frames are missing).

Each timing is the median of ``--repeats`` runs with a warm page cache (the first run after writing the files
is warm too; a cold cache on a network file system costs more per call, and more for ``stat``, which makes one
round trip per file).

    python benchmarks/frame_check.py --root ../frame_check          # 1.19M frames, 1,261 folders
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, List

from common import emit
from tfclip_plugin.data.integrity import MissingFramesError, _checked, check_listed_frames, missing_paths

MARS_FRAMES = 1_191_003
MARS_FOLDERS = 1_261


def frame_paths(root: str, frames: int, folders: int) -> List[str]:
    per_folder = -(-frames // folders)
    paths = []
    for pid in range(folders):
        home = os.path.join(root, "bbox_train" if pid % 2 else "bbox_test", f"{pid:04d}")
        for f in range(min(per_folder, frames - len(paths))):
            paths.append(os.path.join(home, f"{pid:04d}C1T0001F{f:03d}.jpg"))
    return paths


def write_files(paths: List[str]) -> float:
    started = time.perf_counter()
    made = set()
    for path in paths:
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        if not os.path.exists(path):
            open(path, "wb").close()
    return time.perf_counter() - started


def stat_each(paths: List[str]) -> List[str]:
    return [path for path in paths if not os.path.exists(path)]


def check_splits(paths: List[str]) -> List[str]:
    """What a dataset's parse runs (``check_listed_frames`` on 150-frame tracklets; its memo cleared)."""
    tracklets = [(tuple(paths[i:i + 150]), 0, 0) for i in range(0, len(paths), 150)]
    try:
        check_listed_frames("benchmark", {"train": tracklets})
    except MissingFramesError as exc:
        return [None] * int(str(exc).split(": ")[1].split()[0])
    finally:
        _checked.clear()
    return []


def timed(fn: Callable[[List[str]], List[str]], paths: List[str], repeats: int):
    times, found = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        found = fn(paths)
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder for the generated files (kept)")
    parser.add_argument("--frames", type=int, default=MARS_FRAMES)
    parser.add_argument("--folders", type=int, default=MARS_FOLDERS)
    parser.add_argument("--drop", type=int, default=1000, help="paths listed but absent in the second pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="scandir,stat")
    args = parser.parse_args()
    paths = frame_paths(args.root, args.frames, args.folders)
    emit({"benchmark": "frame_check", "write_s": round(write_files(paths), 1), "frames": len(paths),
          "folders": args.folders, "cpus": os.cpu_count()})
    listed = paths + [path.replace(".jpg", ".absent.jpg") for path in paths[:: max(1, len(paths) // args.drop)]]
    methods = {"scandir": missing_paths, "stat": stat_each, "check": check_splits}
    for label, fn in ((name, methods[name]) for name in args.methods.split(",")):
        for name, items in (("all present", paths), (f"{len(listed) - len(paths)} absent", listed)):
            median, times, missing = timed(fn, items, args.repeats)
            emit({"method": label, "list": name, "paths": len(items), "missing": missing, "median_s": round(median, 3),
                  "s_per_million": round(median / len(items) * 1e6, 3), "all_s": [round(t, 3) for t in times]})


if __name__ == "__main__":
    main()
