"""MARS-scale loading against the model alone: dense evaluation, phase 1 and training steps from JPEG files.

Data: synthvid's renderer writes a base set (256x128 JPEGs, quality 90, 50-70-frame tracklets), which is tiled
into one MARS-format set on disk (``<root>/synthvid``): ``--test-frames`` test frames in ~60-frame tracklets
(each replica of a base identity becomes a new identity; files are hard links to the base's JPEGs, copies where
links fail), and ``--train-tracklets`` training tracklets (MARS: 8,298) cut to ``--train-frames`` frames.
Decoding work per frame is that of the rendered JPEGs; the page cache holds one copy of each base file.

Measurements, each through the plugin's real code path on ``--device`` with ``--workers`` loader processes:

- ``dense``: a test-only run through the runner (``run_single``: dense sampling, ``--batch-size`` 8-frame clips
  per forward, ``tfclip.test_precision`` bf16 = a bf16 weight copy): stored frames/s = test frames /
  ``wall_seconds.test``; against ``model_frames_per_s``, the same bf16 copy's forward on random input of that
  batch (what the loading must keep up with);
- ``phase1``: ``TFCLIPEngine.build_memory`` over the training tracklets (every frame, dense chunks, bf16
  weights): stored frames/s against the model's ``encode_for_memory`` alone;
- ``train``: ``--steps`` phase 2 steps (``forward_backward``, ``tfclip.precision`` bf16, P x K x 8 batches of
  RRS clips with flip and erasing) fed by the train loader, against the same number of steps on one batch held
  in memory (no loading); steps/s and the epoch time both imply (``len(train_loader)`` steps); for each
  ``--compile`` mode ('' = eager; the two warm-up steps, compilation included, are ``warmup_s``).

One JSON line per measurement; each names the CPU (``lscpu``) and the GPU, with this run's fp32/bf16 GEMM rates.

    python benchmarks/mars_scale.py --device cuda --workers 12                   # 100k test frames, MARS train
    python benchmarks/mars_scale.py --device cpu --tiny --base-ids 3 --test-frames 600 --train-tracklets 40 \\
        --steps 2 --workers 1 --batch-size 4                                    # a smoke test on a CPU
"""
from __future__ import annotations

import argparse
import glob
import itertools
import os
import os.path as osp
import shutil
import sys
import tempfile
import time
from contextlib import redirect_stdout
from typing import Dict, List, Tuple

import numpy as np
import torch
from scipy.io import savemat

from common import TINY, build_ours, emit, gemm_rates, machine, synchronize, timed
from tfclip_plugin.data import generate_synthvid

Track = Tuple[List[str], int, int]  # frame files, pid, camera (1-based)


def base_tracklets(root: str, split: str) -> Tuple[List[Track], List[int]]:
    """The tracklets of a generated synthvid split (files, pid, camera) and, for 'test', the query rows."""
    from scipy.io import loadmat

    info = osp.join(root, "synthvid", "info")
    home = "bbox_train" if split == "train" else "bbox_test"
    names = open(osp.join(info, f"{split}_name.txt")).read().split()
    rows = loadmat(osp.join(info, f"tracks_{split}_info.mat"))[f"track_{split}_info"]
    tracks = [([osp.join(root, "synthvid", home, n[:4], n) for n in names[start - 1:end]], int(pid), int(cam))
              for start, end, pid, cam in rows]
    query = loadmat(osp.join(info, "query_IDX.mat"))["query_IDX"].ravel().tolist() if split == "test" else []
    return tracks, query


def _place(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_split(folder: str, home: str, tracks: List[Track]) -> Tuple[List[str], np.ndarray]:
    """Write ``tracks`` in MARS's layout under ``folder/home``: (frame names, rows (first, last, pid, cam))."""
    names: List[str] = []
    rows = []
    counters: Dict[Tuple[int, int], int] = {}
    for files, pid, cam in tracks:
        counters[(pid, cam)] = counters.get((pid, cam), 0) + 1
        person = osp.join(folder, home, f"{pid:04d}")
        os.makedirs(person, exist_ok=True)
        first = len(names) + 1
        for frame, source in enumerate(files, 1):
            name = f"{pid:04d}C{cam}T{counters[(pid, cam)]:04d}F{frame:03d}.jpg"
            _place(source, osp.join(person, name))
            names.append(name)
        rows.append((first, len(names), pid, cam))
    return names, np.asarray(rows, dtype=np.int32).reshape(-1, 4)


def tile(tracks: List[Track], copies: int, stride: int) -> List[Track]:
    """``copies`` replicas of ``tracks``, replica k with pids + k x ``stride`` (distractors keep pid 0)."""
    return [(files, pid + k * stride if pid > 0 else 0, cam) for k in range(copies) for files, pid, cam in tracks]


def build_dataset(root: str, test_frames: int, train_tracklets: int, train_frames: int, base_ids: int) -> Dict:
    """The tiled MARS-format set in ``<root>/synthvid``; returns its counts."""
    base = osp.join(root, "base")
    generate_synthvid(base, seed=0, num_train_ids=base_ids, num_test_ids=base_ids, num_cameras=6, min_cameras_per_id=2,
                      max_cameras_per_id=4, max_tracklets_per_camera=2, min_frames=50, max_frames=70, height=256,
                      width=128, num_junk=0, num_distractors=4, short_fraction=0.0)
    test, query = base_tracklets(base, "test")
    train, _ = base_tracklets(base, "train")
    stride = max(t[1] for t in test + train) + 1
    test_copies = max(1, -(-test_frames // sum(len(t[0]) for t in test)))
    train_copies = max(1, -(-train_tracklets // len(train)))
    if max(test_copies, train_copies) * stride > 9999:
        raise ValueError("too many replicas for MARS's 4-digit person ids; lower --test-frames / --train-tracklets")
    target = osp.join(root, "synthvid")
    info = osp.join(target, "info")
    os.makedirs(info)
    train_tracks = [(files[:train_frames], pid, cam) for files, pid, cam in tile(train, train_copies, stride)]
    train_tracks = train_tracks[:train_tracklets]
    train_names, train_rows = write_split(target, "bbox_train", train_tracks)
    test_names, test_rows = write_split(target, "bbox_test", tile(test, test_copies, stride))
    queries = np.asarray([q + k * len(test) for k in range(test_copies) for q in query], dtype=np.int32)
    for name, values in (("train_name.txt", train_names), ("test_name.txt", test_names)):
        with open(osp.join(info, name), "w") as f:
            f.write("\n".join(values) + "\n")
    savemat(osp.join(info, "tracks_train_info.mat"), {"track_train_info": train_rows})
    savemat(osp.join(info, "tracks_test_info.mat"), {"track_test_info": test_rows})
    savemat(osp.join(info, "query_IDX.mat"), {"query_IDX": queries[None]})
    shutil.copyfile(osp.join(base, "synthvid", "synthvid.json"), osp.join(target, "synthvid.json"))
    return {"test_frames": len(test_names), "test_tracklets": len(test_rows), "queries": len(queries),
            "train_frames": len(train_names), "train_tracklets": len(train_rows),
            "train_ids": len(set(train_rows[:, 2].tolist())), "base_frames": len(glob.glob(osp.join(base, "*", "*",
                                                                                                   "*", "*.jpg")))}


def config(args, root: str, save_dir: str, **extra: str):
    from tfclip_plugin.config import get_default_config

    cfg = get_default_config()
    options = {"use_gpu": str(args.device.startswith("cuda")), "model.pretrained": "False",
               "data.sources": "['synthvid']", "data.targets": "['synthvid']", "data.root": root,
               "data.save_dir": save_dir, "data.workers": str(args.workers), "test.batch_size": str(args.batch_size),
               "train.batch_size": str(args.ids * args.instances), "sampler.num_instances": str(args.instances),
               "tfclip.precision": "bf16", "tfclip.test_precision": "bf16", "train.seed": "1",
               "tfclip.save_test_outputs": "False", "tfclip.num_cameras": "6",  # MARS's 6 (a tiny set may miss one)
               "test.ranks": "[1, 5]"}  # SMOKE's sets have fewer than 20 gallery tracklets (the runner's preflight)
    if args.tiny:
        options.update({f"tfclip.{key}": str(value) for key, value in TINY.items()})
    options.update(extra)
    cfg.merge_from_list([item for pair in options.items() for item in pair])
    return cfg


def forward_rate(run, clips: torch.Tensor, repeats: int, device: torch.device) -> float:
    """Frames per second of ``run(clips)`` (no_grad, bf16 autocast), median of ``repeats`` after one warm-up."""
    from tfclip_plugin.engine.features import autocast

    with torch.no_grad(), autocast(device, "bf16"):
        run(clips)
        seconds = [timed(lambda: run(clips), device) for _ in range(repeats)]
    return clips.shape[0] * clips.shape[1] / sorted(seconds)[len(seconds) // 2]


def quiet(fn, *args, **kwargs):
    with redirect_stdout(sys.stderr):
        return fn(*args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--root", default="", help="where to write the data (default: a temporary folder)")
    parser.add_argument("--test-frames", type=int, default=100_000)
    parser.add_argument("--train-tracklets", type=int, default=8298, help="MARS: 8,298")
    parser.add_argument("--train-frames", type=int, default=24, help="frames kept per training tracklet")
    parser.add_argument("--base-ids", type=int, default=12, help="identities rendered per split before tiling")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64, help="test.batch_size (clips per forward)")
    parser.add_argument("--ids", type=int, default=4, help="P identities per training batch")
    parser.add_argument("--instances", type=int, default=4, help="K tracklets per identity")
    parser.add_argument("--steps", type=int, default=100, help="training steps per variant (0: a whole epoch)")
    parser.add_argument("--repeats", type=int, default=10, help="timed model-only forwards")
    parser.add_argument("--compile", default="", help="comma list of tfclip.compile modes for the training steps, "
                        "'' = eager (e.g. ',default': eager, then compiled)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer 64-wide ViT (smoke test)")
    parser.add_argument("--skip", default="", help="comma list of dense,phase1,train to leave out")
    args = parser.parse_args()
    device = torch.device(args.device)
    skip = set(filter(None, args.skip.split(",")))
    info = machine(device)
    gemm = gemm_rates(device, 8 * 129 * 8, 5)
    base = {"cpu": info["cpu"], "gpu": info.get("gpu"), "gemm_gflops": {"fp32": gemm["fp32_gflops"],
                                                                         "bf16": gemm["bf16_gflops"]},
            "device": device.type, "workers": args.workers, "model": "tiny" if args.tiny else "ViT-B/16"}
    emit({"benchmark": "mars_scale", "machine": info, "args": vars(args), "gemm": gemm})

    from tfclip_plugin.data import build_datamanager
    from tfclip_plugin.engine.features import bf16_weights
    from tfclip_plugin.engine.build import build_engine, build_model, build_optimization
    from tfclip_plugin.engine.runner import run_single

    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or scratch
        started = time.perf_counter()
        counts = build_dataset(root, args.test_frames, args.train_tracklets, args.train_frames, args.base_ids)
        emit(dict(base, benchmark="mars_scale_data", seconds=round(time.perf_counter() - started, 1), **counts))
        shape = (args.batch_size, 8, 3, 256, 128)
        clips = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)

        if "dense" not in skip:
            results = quiet(run_single, config(args, root, osp.join(scratch, "dense"), **{"test.evaluate": "True"}))
            seconds = results["wall_seconds"]["test"]
            model = bf16_weights(build_ours(num_classes=counts["train_ids"], tiny=args.tiny).to(device).eval())
            camids = torch.zeros(args.batch_size, dtype=torch.long, device=device)
            model_rate = forward_rate(lambda x: model(x, camids), clips, args.repeats, device)
            emit(dict(base, benchmark="mars_scale_dense", batch_size=args.batch_size, frames=counts["test_frames"],
                      test_s=seconds, frames_per_s=round(counts["test_frames"] / seconds, 1),
                      model_frames_per_s=round(model_rate, 1),
                      loading_share=round(1 - counts["test_frames"] / seconds / model_rate, 3),
                      mAP=round(results["results"]["synthvid"]["mAP"], 5)))
            del model

        if skip >= {"phase1", "train"}:
            return
        modes = args.compile.split(",")
        cfg = config(args, root, osp.join(scratch, "train"), **{"tfclip.compile": modes[0]})
        datamanager = quiet(build_datamanager, cfg)
        torch.manual_seed(0)
        model = quiet(build_model, cfg, datamanager).to(device)
        engine = quiet(build_engine, cfg, datamanager, model, *build_optimization(cfg, model))
        if "phase1" not in skip:
            quiet(engine.build_memory)
            memory_model = bf16_weights(model).eval()
            model_rate = forward_rate(memory_model.encode_for_memory, clips, args.repeats, device)
            emit(dict(base, benchmark="mars_scale_phase1", batch_size=args.batch_size, frames=counts["train_frames"],
                      tracklets=counts["train_tracklets"], seconds=round(engine.phase1_seconds, 2),
                      frames_per_s=round(counts["train_frames"] / engine.phase1_seconds, 1),
                      model_frames_per_s=round(model_rate, 1),
                      loading_share=round(1 - counts["train_frames"] / engine.phase1_seconds / model_rate, 3)))
            del memory_model
        else:
            model.set_memory(torch.randn(model.num_classes, model.embed_dim, device=device))
        if "train" in skip:
            return
        for mode in modes:
            if mode != modes[0]:
                cfg = config(args, root, osp.join(scratch, "train"), **{"tfclip.compile": mode})
                memory = model.memory.detach().clone()
                torch.manual_seed(0)
                model = quiet(build_model, cfg, datamanager).to(device)
                model.set_memory(memory)
                engine = quiet(build_engine, cfg, datamanager, model, *build_optimization(cfg, model))
            emit(dict(base, benchmark="mars_scale_train", compile=mode or "off", **train_steps(engine, args, device)))


def train_steps(engine, args, device: torch.device) -> Dict:
    """``--steps`` steps fed by the train loader, then as many on one batch held in memory."""
    loader = engine.train_loader
    steps = args.steps or len(loader)
    engine.model.train()
    engine.epoch = 0
    batches = (batch for _ in itertools.count() for batch in loader)  # epochs after epochs, as many as needed
    first = next(batches)
    started = time.perf_counter()
    for engine.batch_idx in range(2):  # warm-up (and compilation with tfclip.compile) outside the timing
        engine.forward_backward(first)
    synchronize(device)
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    done = 0
    for engine.batch_idx, batch in zip(range(steps), batches):
        engine.forward_backward(batch)
        done += 1
    synchronize(device)
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    for engine.batch_idx in range(done):
        engine.forward_backward(first)
    synchronize(device)
    held = time.perf_counter() - started
    frames = args.ids * args.instances * 8
    return {"batch": f"{args.ids}x{args.instances}x8", "steps": done, "loader_steps_per_epoch": len(loader),
            "loaded_step_s": round(loaded / done, 4), "held_step_s": round(held / done, 4),
            "loaded_frames_per_s": round(frames * done / loaded, 1),
            "held_frames_per_s": round(frames * done / held, 1),
            "epoch_s_loaded": round(len(loader) * loaded / done, 1),
            "epoch_s_held": round(len(loader) * held / done, 1),
            "warmup_s": round(warmup, 2)}


if __name__ == "__main__":
    main()
