"""What a test-only evaluation spends outside the model, in units of plain Pillow decoding of the same JPEGs.

Generates a MARS-like test set on disk (synthvid's renderer: people with clothing textures, camera colour casts,
blur and noise; 256x128 JPEGs at quality 90 in 40-80-frame tracklets; ``--frames`` sets the size), then for each
``--workers`` value and each source tree (this checkout, and with ``--before-tree DIR`` another one, e.g. main
before a change; the trees alternate within each repeat), in a fresh process on one torch thread:

- ``test_s``: ``wall_seconds.test`` of a test-only run through the runner (``run_single``: dense sampling, every
  frame once, ``--batch-size`` 8-frame clips per forward, tfclip protocol) of a tiny TF-CLIP ViT (1 layer, width
  64, random weights): loading, the forwards, ranking;
- ``model_s``: the same model over random input of the same batch shapes (the forwards alone);
- ``pil_decode_s``: ``Image.open(path).convert('RGB')`` of every frame that evaluation reads, nothing else;
- ``ratio`` = (test_s - model_s) / pil_decode_s: the cost of everything that is not the model (decoding
  included) per unit of plain decoding; 1.0 would be a pipeline that only decodes;
- ``outside_model_in_run_s``, ``ratio_in_run``: test_s minus the time the run itself spent in the engine's clip
  encoder (the forwards), over pil_decode_s: the same quantity from one run, not a difference of two runs of a
  model whose time varies by more than the pipeline's on a shared machine;
- ``null_model_test_s``, ``ratio_null_model``: the same test-only run with the engine's clip encoder returning
  zeros: the pipeline measured directly;
- ``cpu_s``, ``ratio_cpu``, ``ratio_null_model_cpu``: the same in CPU seconds (the process and its finished
  DataLoader workers), which other work on a shared machine disturbs far less than wall time;
- ``parts`` (with ``--parts``, on the workers-0 line): one pass over the same batches in the process, timing each
  step on its own: decode (the dataset's frame reader), transform, collate, transfer (the engine's
  normalisation / move to the device), model, in CPU seconds; ``parts_pil_decode_s``: Pillow's decoding right
  after, in CPU seconds too.

``--decoders`` adds one line per JPEG decoder on the generated frames: microseconds per frame (median and least of
the round-robin repeats), the largest pixel difference from Pillow's, and whether a truncated file raises.

Each process takes ``--rounds`` turns of (Pillow, test-only run, model alone, null-model run) and reports the
least time of each kind (other work on a shared machine only ever adds time; ``every_round`` has them all).
Every line names the CPU (``lscpu``) and carries this run's fp32 and bf16 GEMM rates.

    python benchmarks/pipeline.py                                     # 3,000 frames, workers 0,1,2
    python benchmarks/pipeline.py --before-tree ../main-checkout --parts --decoders --repeats 3
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(HERE)
CHILD_MARK = "PIPELINE-CHILD "
TINY_TOWER = {"vision_width": 64, "vision_layers": 1, "embed_dim": 64}
SEQ_LEN = 8


def generate(root: str, frames: int, seed: int = 0) -> Dict:
    """A synthvid test set of about ``frames`` 256x128 JPEG frames (and a two-identity training split)."""
    from tfclip_plugin.data import generate_synthvid

    ids = max(2, round(frames / 240))  # about 4 tracklets of 60 frames per identity
    generate_synthvid(root, seed=seed, num_train_ids=2, num_test_ids=ids, num_cameras=2, min_cameras_per_id=2,
                      max_cameras_per_id=2, max_tracklets_per_camera=2, min_frames=40, max_frames=80, height=256,
                      width=128, num_junk=0, num_distractors=2, short_fraction=0.0)
    with open(osp.join(root, "synthvid", "synthvid.json")) as f:
        return json.load(f)["counts"]


# ------------------------------------------------------------------------------------------- child process
def test_tracklets(root: str):
    from tfclip_plugin.data import build_sequence_transforms
    from tfclip_plugin.data.datasets.synthvid import SynthVid

    transform = build_sequence_transforms(256, 128, [])[1]
    data = SynthVid(root=root, transform=transform, verbose=False)
    return data, transform


class Clock:
    """Wall seconds and CPU seconds (this process and its finished children: DataLoader workers) of a block."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu


def cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pil_decode(paths: List[str]) -> Clock:
    from PIL import Image

    with Clock() as clock:
        for path in paths:
            with Image.open(path) as image:
                image.convert("RGB")
    return clock


def batch_shapes(tracklets, batch_size: int) -> List[int]:
    """Clips per forward of the dense evaluation of ``tracklets`` (full batches and the last one)."""
    chunks = sum(-(-len(t[0]) // SEQ_LEN) for t in tracklets)
    return [batch_size] * (chunks // batch_size) + ([chunks % batch_size] if chunks % batch_size else [])


def model_alone(model, sizes: List[int]) -> Clock:
    inputs = {n: torch.randn(n, SEQ_LEN, 3, 256, 128) for n in set(sizes)}
    camids = {n: torch.zeros(n, dtype=torch.long) for n in set(sizes)}
    with torch.no_grad():
        model(inputs[sizes[0]][:1], camids[sizes[0]][:1])
        with Clock() as clock:
            for n in sizes:
                model(inputs[n], camids[n])
    return clock


def pipeline_parts(model, data, transform, batch_size: int) -> Dict[str, float]:
    """One in-process pass over the dense batches of query and gallery, each step's CPU seconds on its own."""
    from torch.utils.data import default_collate

    from tfclip_plugin.data import DenseClipDataset
    from tfclip_plugin.engine import features

    normaliser = getattr(transform, "normaliser", None)  # absent before the uint8 pipeline: clips were float
    to_input = normaliser.stream("cpu") if normaliser is not None else (lambda clips: clips.to("cpu"))
    collate = getattr(features, "ReusedClipsCollate", lambda: default_collate)()  # what the tree's loop uses
    parts = dict.fromkeys(("decode", "transform", "collate", "transfer", "model"), 0.0)
    clock = time.process_time
    with torch.no_grad():
        for tracklets in (data.query, data.gallery):
            dataset = DenseClipDataset(tracklets, transform, seq_len=SEQ_LEN, skip_bad_frames=False)
            for start in range(0, len(dataset), batch_size):
                items = []
                for index in range(start, min(start + batch_size, len(dataset))):
                    tracklet = int(dataset.tracklet_index[index])
                    paths, pid, camid = dataset.tracklets[tracklet][:3]
                    t0 = clock()
                    frames = dataset.frame_reader.read(paths, dataset.chunks[index])
                    t1 = clock()
                    items.append({"img": transform(frames), "index": tracklet, "pid": int(pid), "camid": int(camid)})
                    parts["decode"] += t1 - t0
                    parts["transform"] += clock() - t1
                t0 = clock()
                batch = collate(items)
                t1 = clock()
                clips = to_input(batch["img"])
                t2 = clock()
                model(clips, batch["camid"])
                parts["collate"] += t1 - t0
                parts["transfer"] += t2 - t1
                parts["model"] += clock() - t2
    return {k: round(v, 3) for k, v in parts.items()}


def test_run(cfg, null_model: bool = False) -> Tuple[Dict, Clock]:
    """``run_single(cfg)`` (a test-only run), quiet; with the CPU seconds of its evaluation (``_evaluate``) and,
    in ``results['model_in_run']``, the time spent in the engine's clip encoder (the forwards) during it.
    ``null_model``: the engine's clip encoder returns zeros (the pipeline alone, through the same code)."""
    from tfclip_plugin.engine.engine import TFCLIPEngine
    from tfclip_plugin.engine.mixins import ProtocolEvaluationMixin
    from tfclip_plugin.engine.runner import run_single

    clock, model = Clock(), Clock()
    model.wall = model.cpu = 0.0
    evaluate, encode = ProtocolEvaluationMixin._evaluate, TFCLIPEngine.encode_clips

    def timed_evaluate(self, *args, **kwargs):
        with clock:
            return evaluate(self, *args, **kwargs)

    def timed_encode(self, clips, camids):
        with Clock() as call:
            features = encode(self, clips, camids)
        model.wall, model.cpu = model.wall + call.wall, model.cpu + call.cpu
        return features

    ProtocolEvaluationMixin._evaluate = timed_evaluate
    TFCLIPEngine.encode_clips = timed_encode
    if null_model:
        TFCLIPEngine.encode_clips = lambda self, clips, camids: clips.new_zeros(clips.shape[0], TINY_TOWER["embed_dim"])
    try:
        with open(os.devnull, "w") as sink:
            stdout, sys.stdout = sys.stdout, sink
            try:
                results = run_single(cfg)
            finally:
                sys.stdout = stdout
    finally:
        ProtocolEvaluationMixin._evaluate, TFCLIPEngine.encode_clips = evaluate, encode
    results["model_in_run"] = model
    return results, clock


def child(spec: Dict) -> Dict:
    """One tree, one workers value: the test-only run, the model alone, Pillow alone, the run with a null model
    (and the parts)."""
    torch.set_num_threads(1)
    import tfclip_plugin
    from tfclip_plugin.config import get_default_config
    from tfclip_plugin.models import build_tfclip

    data, transform = test_tracklets(spec["root"])
    tracklets = list(data.query) + list(data.gallery)
    paths = [p for t in tracklets for p in t[0]]
    for path in paths:  # into the page cache, for every measurement alike
        with open(path, "rb") as f:
            f.read()
    cfg = get_default_config()
    cfg.merge_from_list([
        "model.pretrained", "False", "data.sources", "['synthvid']", "data.targets", "['synthvid']",
        "data.root", spec["root"], "data.save_dir", spec["save_dir"], "data.height", "256", "data.width", "128",
        "data.workers", str(spec["workers"]), "test.batch_size", str(spec["batch_size"]), "test.evaluate", "True",
        "video.seq_len", str(SEQ_LEN), "train.seed", "1", "sampler.train_sampler", "RandomSampler",
        "test.ranks", "[1, 5]",  # small sets have fewer than 20 gallery tracklets (the runner's preflight checks)
        *[item for key, value in TINY_TOWER.items() for item in (f"tfclip.{key}", str(value))],
    ])
    torch.manual_seed(0)
    model = build_tfclip("tfclip_vit", data.num_train_pids, 2, pretrained=False, height=256, width=128,
                         **TINY_TOWER).eval()
    sizes = batch_shapes(data.query, spec["batch_size"]) + batch_shapes(data.gallery, spec["batch_size"])
    rounds = []
    for _ in range(spec["rounds"]):
        pil = pil_decode(paths)
        results, test = test_run(cfg)
        alone = model_alone(model, sizes)
        null_results, null = test_run(cfg, null_model=True)
        inside = results["model_in_run"]
        rounds.append({"test": (results["wall_seconds"]["test"], test.cpu), "model": (alone.wall, alone.cpu),
                       "outside_model_in_run": (results["wall_seconds"]["test"] - inside.wall, test.cpu - inside.cpu),
                       "pil_decode": (pil.wall, pil.cpu), "null_model_test": (null_results["wall_seconds"]["test"],
                                                                              null.cpu)})
    least = {k: tuple(min(r[k][i] for r in rounds) for i in (0, 1)) for k in rounds[0]}
    out = {"tfclip_plugin": shown_path(osp.dirname(osp.dirname(osp.abspath(tfclip_plugin.__file__)))),
           "frames": len(paths), "clips": sum(sizes), "rounds": spec["rounds"],
           "test_s": least["test"][0], "model_s": round(least["model"][0], 3),
           "pil_decode_s": round(least["pil_decode"][0], 3), "null_model_test_s": least["null_model_test"][0],
           "ratio": round((least["test"][0] - least["model"][0]) / least["pil_decode"][0], 2),
           "ratio_null_model": round(least["null_model_test"][0] / least["pil_decode"][0], 2),
           "outside_model_in_run_s": round(least["outside_model_in_run"][0], 3),
           "ratio_in_run": round(least["outside_model_in_run"][0] / least["pil_decode"][0], 2),
           "ratio_in_run_cpu": round(least["outside_model_in_run"][1] / least["pil_decode"][1], 2),
           "cpu_s": {k: round(v[1], 3) for k, v in least.items()},
           "ratio_cpu": round((least["test"][1] - least["model"][1]) / least["pil_decode"][1], 2),
           "ratio_null_model_cpu": round(least["null_model_test"][1] / least["pil_decode"][1], 2),
           "every_round": [{k: [round(x, 3) for x in v] for k, v in r.items()} for r in rounds],
           "mAP": round(results["results"]["synthvid"]["mAP"], 5)}
    if spec["parts"]:
        out["parts"] = pipeline_parts(model, data, transform, spec["batch_size"])
        out["parts_pil_decode_s"] = round(pil_decode(paths).cpu, 3)
    return out


def run_child(tree: str, spec: Dict) -> Dict:
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, osp.abspath(__file__), "--child", json.dumps(spec)], env=env,
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(CHILD_MARK)]
    if done.returncode or not lines:
        raise RuntimeError(f"measurement in {tree} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(CHILD_MARK):])


def shown_path(tree: str) -> str:
    """``tree`` relative to this checkout ('.' for itself): the records name no machine's folders."""
    return osp.relpath(tree, REPO)


def tree_commit(tree: str) -> str:
    done = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    return (done.stdout.strip() or "unknown") + ("+changes" if dirty else "")


# --------------------------------------------------------------------------------------------- decoders
def decoders(device: torch.device) -> Dict[str, Callable[[str], np.ndarray]]:
    """name -> path -> (H, W, 3) uint8 pixels."""
    from PIL import Image

    from tfclip_plugin.data.frames import read_frame

    def pil(path):
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    def pil_draft_half(path):  # libjpeg's DCT scaling straight to half size (then the exact size)
        with Image.open(path) as image:
            image.draft("RGB", (image.size[0] // 2, image.size[1] // 2))
            image = image.convert("RGB")
            return np.asarray(image.resize((64, 128), Image.Resampling.BILINEAR) if image.size != (64, 128) else image)

    def pil_full_half(path):  # what draft replaces: full decode, then Pillow's bilinear resize to half size
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB").resize((64, 128), Image.Resampling.BILINEAR))

    out = {"pil": pil, "pil_full_then_resize_half": pil_full_half, "pil_draft_half": pil_draft_half,
           "plugin_read_frame": lambda path: read_frame(path).permute(1, 2, 0).numpy()}
    try:
        from torchvision.io import decode_jpeg, read_file

        out["torchvision_decode_jpeg"] = lambda path: decode_jpeg(read_file(path)).permute(1, 2, 0).numpy()
    except ImportError:
        pass
    try:
        import cv2

        flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
        out["opencv_imread"] = lambda path: cv2.imread(path, flags)
    except (ImportError, AttributeError):
        pass
    return out


def nvjpeg_batched(paths: List[str], device: torch.device, batch: int = 256) -> Callable[[], List[np.ndarray]]:
    """torchvision's batched GPU decode (nvjpeg): one call per ``batch`` files, pixels copied back."""
    from torchvision.io import decode_jpeg

    encoded = [torch.from_numpy(np.fromfile(path, dtype=np.uint8)) for path in paths]

    def run() -> List[torch.Tensor]:
        images = []
        for start in range(0, len(encoded), batch):
            images += decode_jpeg(encoded[start:start + batch], device=device)
        torch.cuda.synchronize(device)
        return images

    return run


def measure_decoders(paths: List[str], repeats: int, device: torch.device, base: Dict) -> None:
    from common import emit

    calls = decoders(device)
    truncated = osp.join(tempfile.mkdtemp(), "truncated.jpg")
    data = open(paths[0], "rb").read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    seconds: Dict[str, List[float]] = {name: [] for name in calls}
    gpu = nvjpeg_batched(paths, device) if device.type == "cuda" else None
    if gpu is not None:
        seconds["nvjpeg_batched_gpu"] = []
        gpu()
    for _ in range(repeats):
        for name, decode in calls.items():
            started = time.perf_counter()
            for path in paths:
                decode(path)
            seconds[name].append(time.perf_counter() - started)
        if gpu is not None:
            started = time.perf_counter()
            gpu()
            seconds["nvjpeg_batched_gpu"].append(time.perf_counter() - started)
    reference = {"pil": [calls["pil"](p) for p in paths],
                 "half": [calls["pil_full_then_resize_half"](p) for p in paths]}
    gpu_pixels = [image.permute(1, 2, 0).cpu().numpy() for image in gpu()] if gpu is not None else None
    for name, values in seconds.items():
        if name == "nvjpeg_batched_gpu":
            pixels, raises = gpu_pixels, None
        else:
            pixels = [calls[name](p) for p in paths]
            try:
                calls[name](truncated)
                raises = False
            except Exception:  # noqa: BLE001  (each decoder has its own error type)
                raises = True
        against = reference["half"] if "half" in name else reference["pil"]
        diff = max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(pixels, against))
        median = sorted(values)[len(values) // 2]
        emit(dict(base, benchmark="pipeline_decoder", decoder=name, frames=len(paths),
                  us_per_frame=round(1e6 * median / len(paths), 1), least_us_per_frame=round(1e6 * min(values) /
                                                                                             len(paths), 1),
                  all_us_per_frame=[round(1e6 * v / len(paths), 1) for v in values],
                  max_abs_diff_vs_pil=diff,
                  compared_with="pil_full_then_resize_half" if "half" in name else "pil",
                  raises_on_truncated_file=raises))


# ------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=3000, help="about this many test frames (256x128 JPEGs)")
    parser.add_argument("--root", default="", help="where to generate (default: a temporary folder)")
    parser.add_argument("--workers", default="0,1,2", help="comma list of data.workers values")
    parser.add_argument("--batch-size", type=int, default=32, help="test.batch_size (clips per forward)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over workers x trees")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per process (the least time of each "
                        "kind is reported: on a shared machine other work only ever adds time)")
    parser.add_argument("--before-tree", default="", help="another checkout measured alongside (e.g. main)")
    parser.add_argument("--parts", action="store_true", help="time the pipeline's steps on the workers-0 runs")
    parser.add_argument("--decoders", action="store_true", help="one line per JPEG decoder on the generated frames")
    parser.add_argument("--decoder-frames", type=int, default=1000)
    args = parser.parse_args()
    if args.child:
        print(CHILD_MARK + json.dumps(child(json.loads(args.child))), flush=True)
        return

    sys.path.insert(0, HERE)
    from common import emit, gemm_rates, machine

    cpu = torch.device("cpu")
    torch.set_num_threads(1)
    info = machine(cpu)
    gemm = gemm_rates(cpu, 1032, 5)
    base = {"cpu": info["cpu"], "gemm_gflops": {"fp32": gemm["fp32_gflops"], "bf16": gemm["bf16_gflops"]},
            "threads": 1}
    trees = {"after": REPO}
    if args.before_tree:
        trees = {"before": osp.abspath(args.before_tree), **trees}
    emit({"benchmark": "pipeline", "machine": info, "args": vars(args), "gemm": gemm,
          "trees": {name: {"path": shown_path(path), "commit": tree_commit(path)} for name, path in trees.items()}})
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or scratch
        started = time.perf_counter()
        counts = generate(root, args.frames)
        emit(dict(base, benchmark="pipeline_data", seconds=round(time.perf_counter() - started, 1), **counts))
        if args.decoders:
            files = sorted(glob.glob(osp.join(root, "synthvid", "bbox_test", "*", "*.jpg")))[:args.decoder_frames]
            measure_decoders(files, max(args.repeats, 3), torch.device("cuda") if torch.cuda.is_available() else cpu,
                             base)
        for repeat in range(args.repeats):
            for workers in (int(w) for w in args.workers.split(",")):
                for name, tree in trees.items():
                    spec = {"root": root, "save_dir": osp.join(scratch, f"log-{name}-{workers}-{repeat}"),
                            "workers": workers, "batch_size": args.batch_size, "parts": args.parts and workers == 0,
                            "rounds": args.rounds}
                    result = run_child(tree, spec)
                    emit(dict(base, benchmark="pipeline_test", tree=name, workers=workers, repeat=repeat,
                              batch_size=args.batch_size, **result,
                              load_avg_1min=round(os.getloadavg()[0], 2)))


if __name__ == "__main__":
    main()
