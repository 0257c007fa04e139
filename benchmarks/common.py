"""Shared pieces of the benchmark scripts: JSON lines, timing, peak memory, the machine, model builders and
the reference TF-CLIP built in-process from a user's checkout.

Every script prints one JSON object per line and measurement (``emit``). Times are wall-clock seconds
(``time.perf_counter``, CUDA synchronised); a measurement reports the median of its repeats and every
repeat, so a loaded machine shows up as spread.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import types
from contextlib import contextmanager, redirect_stdout
from typing import Callable, Dict, Iterator, List, Optional

import torch

NUM_CLASSES = 625  # MARS training identities
NUM_CAMERAS = 6
TINY = {"vision_width": 64, "vision_layers": 2, "embed_dim": 64}  # --tiny: a smoke-test model


def emit(record: Dict) -> None:
    """Print one measurement as a JSON line."""
    print(json.dumps(record, sort_keys=False), flush=True)


def machine(device: torch.device) -> Dict:
    """What the numbers were measured on."""
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "cpu": _cpu_name(), "python": platform.python_version()}
    if hasattr(os, "getloadavg"):
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    """``lscpu``'s model name (else /proc/cpuinfo's)."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                                 env=dict(os.environ, LC_ALL="C")).stdout
        for line in listing.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gemm_rates(device: torch.device, rows: int, repeats: int) -> Dict:
    """GFLOP/s of (rows x 768) @ (768 x 3072), ViT-B/16's MLP shape, in fp32 and bf16 (median of ``repeats``):
    their ratio bounds what bf16 can gain over fp32 for a model made mostly of matrix products."""
    out = {"benchmark": "gemm", "shape": [rows, 768, 3072], "device": device.type}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(rows, 768, device=device, dtype=dtype)
        w = torch.randn(3072, 768, device=device, dtype=dtype)
        torch.nn.functional.linear(a, w)
        seconds = sorted(timed(lambda: torch.nn.functional.linear(a, w), device) for _ in range(repeats))
        out[f"{name}_gflops"] = round(2 * rows * 768 * 3072 / seconds[len(seconds) // 2] / 1e9, 1)
    out["bf16_over_fp32"] = round(out["bf16_gflops"] / out["fp32_gflops"], 2)
    return out


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer 64-wide ViT instead of ViT-B/16 (smoke test)")
    parser.add_argument("--reference-dir", default="",
                        help="a checkout of AsuradaYuci/TF-CLIP: also measure the reference implementation")


def setup(args: argparse.Namespace) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def summary(seconds: List[float]) -> Dict:
    return {"median_s": round(statistics.median(seconds), 4), "all_s": [round(s, 4) for s in seconds]}


def interleaved(calls: Dict[str, Callable[[], object]], repeats: int, warmup: int,
                device: torch.device) -> Dict[str, List[float]]:
    """Time every call ``repeats`` times, round-robin, so that load changes on a shared machine hit all
    variants alike."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    seconds: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            seconds[name].append(timed(fn, device))
    return seconds


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _return_freed_memory_to_the_system() -> None:
    """glibc keeps freed blocks mapped, so the resident set would not fall back after a step: from here on,
    blocks of 64 KiB or more are mapped and unmapped one by one (``mallopt(M_MMAP_THRESHOLD)``), and what is
    free now is given back (``malloc_trim``). Called only once the timing is done (it makes allocation dearer)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    libc.malloc_trim(0)


class PeakMemory:
    """Peak memory of what runs inside ``with`` (MiB): CUDA's allocator peak on a GPU (weights, optimizer state
    and activations); on the CPU the resident set sampled every 2 ms minus the resident set on entry, with freed
    memory returned to the system first: the step's working memory (activations, gradients, temporaries),
    without the weights and optimizer state already held."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib: Optional[float] = None
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_rss_increase"

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _return_freed_memory_to_the_system()
        self._start = self._peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        else:
            self._stop.set()
            self._thread.join()
            self.mib = (max(self._peak, _rss_bytes()) - self._start) / 2 ** 20


def build_ours(num_classes: int = NUM_CLASSES, stride: int = 16, tiny: bool = False,
               grad_checkpointing: bool = False, height: int = 256, width: int = 128) -> torch.nn.Module:
    """Our TF-CLIP ViT-B/16 (random weights: timing does not depend on them)."""
    from tfclip_plugin.models import build_tfclip

    options = dict(TINY) if tiny else {}
    return build_tfclip("tfclip_vit", num_classes, NUM_CAMERAS, stride=stride, height=height, width=width,
                        grad_checkpointing=grad_checkpointing, **options)


def with_multihead_attention(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with each ``SelfAttention`` put back to the ``nn.MultiheadAttention`` open_clip builds (same
    weights): the attention path before ``models/attention.py``, to measure what that change gains."""
    from tfclip_plugin.models.attention import SelfAttention

    for name, module in list(model.named_modules()):
        if isinstance(module, SelfAttention):
            mha = torch.nn.MultiheadAttention(module.in_proj_weight.shape[1], module.num_heads, batch_first=True)
            mha.load_state_dict(module.state_dict())
            parent, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attribute,
                    mha.to(module.in_proj_weight.device, module.in_proj_weight.dtype))
    return model


@contextmanager
def _on_path(directory: str) -> Iterator[None]:
    sys.path.insert(0, directory)
    try:
        yield
    finally:
        sys.path.remove(directory)


def build_reference(reference_dir: str, num_classes: int = NUM_CLASSES, stride: int = 16,
                    seq_len: int = 8) -> torch.nn.Module:
    """The reference TF-CLIP ``build_transformer`` (ViT-B-16, SIE cameras, 256x128, features before BN) from a
    checkout of AsuradaYuci/TF-CLIP, run as shipped except for two runtime substitutions, needed because the
    reference downloads OpenAI's archive and moves the model to CUDA inside its constructor:
    ``load_clip_to_cpu`` returns an object whose ``visual`` is the reference's own
    ``model.clip.model.VisionTransformer`` (random weights, the same shapes) and whose ``.to()`` does nothing.
    Nothing of the reference is copied; its modules are imported from ``reference_dir``.
    """
    if not os.path.isfile(os.path.join(reference_dir, "model", "make_model_clipreid.py")):
        raise FileNotFoundError(f"--reference-dir {reference_dir!r}: expected a checkout of AsuradaYuci/TF-CLIP "
                                "(model/make_model_clipreid.py not found)")
    with _on_path(reference_dir):
        from config.defaults import _C
        import model.make_model_clipreid as reference
        from model.clip.model import VisionTransformer

    def load_clip_without_download(backbone_name: str, h_resolution: int, w_resolution: int, stride_size: int):
        clip = types.SimpleNamespace(
            visual=VisionTransformer(h_resolution, w_resolution, 16, stride_size, 768, 12, 12, 512))
        clip.to = lambda *args, **kwargs: clip
        return clip

    reference.load_clip_to_cpu = load_clip_without_download
    cfg = _C.clone()
    cfg.merge_from_list(["MODEL.NAME", "ViT-B-16", "MODEL.SIE_CAMERA", True, "MODEL.SIE_COE", 1.0,
                         "MODEL.STRIDE_SIZE", [stride, stride], "INPUT.SIZE_TRAIN", [256, 128],
                         "INPUT.SEQ_LEN", seq_len, "TEST.NECK_FEAT", "before", "DATASETS.NAMES", "mars"])
    with redirect_stdout(sys.stderr):  # it prints the camera count; stdout carries JSON lines only
        return reference.build_transformer(num_classes, NUM_CAMERAS, 1, cfg)
