"""synthvid: a generated video ReID benchmark written in MARS's exact on-disk format.

Every person has a fixed appearance (clothing colours and textures, body shape, hair, accessories) that
stays the same in every camera; every camera has its own illumination, colour cast, blur, noise, background
and scale. People walk (translation, leg swing, vertical bobbing) and are partly occluded in some
tracklets. The test split holds junk tracklets (pid -1, folder ``00-1``) and distractors (pid 0, folder
``0000``) as MARS does, and tracklet lengths vary, some under 8 frames. Deterministic for a given seed
(and Pillow's JPEG encoder); only the .mat headers differ, as scipy stamps them with the creation time.

Output ``<root>/synthvid/``: ``bbox_train/<pid4>/<pid4>C<cam>T<tracklet4>F<frame3>.jpg``, ``bbox_test/...``,
``info/{train_name.txt, test_name.txt, tracks_train_info.mat, tracks_test_info.mat, query_IDX.mat}`` and
``synthvid.json`` (seed, sizes, counts).
"""
from __future__ import annotations

import colorsys
import dataclasses
import json
import os
import os.path as osp
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
from PIL import Image, ImageFilter
from scipy.io import savemat

DATASET_DIR = "synthvid"
MAX_CAMERAS = 6  # MARS names hold one camera digit and torchreid's parser checks 1..6
TEXTURES = ("solid", "hstripes", "vstripes", "checker", "panel")
ACCESSORIES = ("none", "backpack", "hat", "bag")


@dataclass(frozen=True)
class SynthVidSize:
    """Sizes of a generated benchmark (keyword arguments of :func:`generate_synthvid`).

    The defaults (about 250 tracklets, 5,400 frames of 64x32) generate in a few seconds on one core.
    """

    num_train_ids: int = 24
    num_test_ids: int = 24
    num_cameras: int = 6
    min_cameras_per_id: int = 2
    max_cameras_per_id: int = 4
    max_tracklets_per_camera: int = 2
    min_frames: int = 8
    max_frames: int = 40
    short_fraction: float = 0.12  # tracklets of 2..7 frames
    num_junk: int = 10  # pid -1 tracklets in bbox_test/00-1
    num_distractors: int = 10  # pid 0 tracklets in bbox_test/0000
    occlusion_probability: float = 0.3
    height: int = 64
    width: int = 32

    def check(self) -> None:
        """ValueError for sizes the MARS format or the split logic cannot hold."""
        if not 2 <= self.num_cameras <= MAX_CAMERAS:
            raise ValueError(f"num_cameras must lie in [2, {MAX_CAMERAS}] (MARS format); got {self.num_cameras}")
        if not 2 <= self.min_cameras_per_id <= self.max_cameras_per_id <= self.num_cameras:
            raise ValueError("need 2 <= min_cameras_per_id <= max_cameras_per_id <= num_cameras")
        if self.num_train_ids < 1 or self.num_test_ids < 1 or self.num_train_ids + self.num_test_ids > 9998:
            raise ValueError("need 1 or more train and test ids, 9998 at most in all (4-digit MARS pids)")
        if not 2 <= self.min_frames <= self.max_frames <= 999 or self.max_tracklets_per_camera < 1:
            raise ValueError("need 2 <= min_frames <= max_frames <= 999 and max_tracklets_per_camera >= 1")
        if self.height < 16 or self.width < 8:
            raise ValueError(f"frames must be at least 16x8; got {self.height}x{self.width}")


@dataclass(frozen=True)
class Person:
    top: Tuple[float, float, float]
    top2: Tuple[float, float, float]
    bottom: Tuple[float, float, float]
    shoes: Tuple[float, float, float]
    skin: Tuple[float, float, float]
    hair: Tuple[float, float, float]
    texture: str
    period: int
    width: float
    height: float
    accessory: str
    accessory_colour: Tuple[float, float, float]


@dataclass(frozen=True)
class Camera:
    gain: float
    cast: Tuple[float, float, float]
    blur: float
    noise: float
    scale: float
    background: Tuple[float, float, float]
    gradient: float


# Clothing colours come from a palette (as clothing colours cluster into a few names), so that the training
# persons cover the colours the test persons wear in new combinations.
PALETTE = ((200, 30, 30), (110, 15, 20), (235, 130, 30), (230, 210, 40), (40, 150, 50), (20, 80, 35),
           (40, 190, 200), (40, 80, 210), (20, 30, 90), (120, 50, 170), (230, 120, 170), (235, 235, 230),
           (130, 130, 135), (25, 25, 28), (110, 70, 35), (210, 190, 150))
SKINS = ((241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 56, 31))
HAIRS = ((20, 15, 10), (70, 45, 20), (150, 110, 60), (200, 180, 130), (120, 120, 120))


def _colour(rng: np.random.Generator, saturation=(0.35, 1.0), value=(0.25, 1.0)) -> Tuple[float, float, float]:
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value))
    return tuple(float(c) * 255.0 for c in rgb)


def _pick(rng: np.random.Generator, colours, exclude=()) -> Tuple[float, float, float]:
    choices = [c for c in colours if c not in exclude]
    return tuple(float(c) for c in choices[rng.integers(len(choices))])


def random_person(rng: np.random.Generator) -> Person:
    """A person's appearance, fixed across cameras."""
    top = _pick(rng, PALETTE)
    return Person(
        top=top, top2=_pick(rng, PALETTE, exclude=(top,)), bottom=_pick(rng, PALETTE, exclude=(top,)),
        shoes=_pick(rng, PALETTE[11:]), skin=_pick(rng, SKINS), hair=_pick(rng, HAIRS),
        texture=TEXTURES[rng.integers(len(TEXTURES))], period=int(rng.integers(2, 5)),
        width=float(rng.uniform(0.8, 1.25)), height=float(rng.uniform(0.85, 1.0)),
        accessory=ACCESSORIES[rng.integers(len(ACCESSORIES))], accessory_colour=_pick(rng, PALETTE),
    )


def random_camera(rng: np.random.Generator) -> Camera:
    """A camera's imaging conditions."""
    return Camera(
        gain=float(rng.uniform(0.8, 1.15)), cast=tuple(float(c) for c in rng.uniform(0.92, 1.08, 3)),
        blur=float(rng.choice([0.0, 0.3, 0.6])), noise=float(rng.uniform(0.0, 4.0)),
        scale=float(rng.uniform(0.8, 0.95)), background=_colour(rng, saturation=(0.0, 0.4), value=(0.2, 0.8)),
        gradient=float(rng.uniform(-40, 40)),
    )


def render_tracklet(person: Person, camera: Camera, num_frames: int, size: SynthVidSize,
                    rng: np.random.Generator, occluded: bool, mirrored: bool) -> List[Image.Image]:
    """``num_frames`` RGB frames (size.height x size.width) of ``person`` walking in ``camera``."""
    height, width = size.height, size.width
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.empty((height, width, 3), np.float32)
    background[:] = camera.background
    background += (yy / height - 0.5)[..., None] * camera.gradient + rng.uniform(-12, 12, 3)
    body = camera.scale * person.height * height
    start = width / 2 + rng.uniform(-0.15, 0.15) * width
    speed = rng.uniform(-0.25, 0.25)
    phase, bob = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.2)
    occluder = None
    if occluded:
        if rng.uniform() < 0.5:  # a pole
            x0 = rng.uniform(0.1, 0.8) * width
            occluder = (0, height, x0, x0 + rng.uniform(0.12, 0.25) * width)
        else:  # a low obstacle hiding the legs
            y0 = height - rng.uniform(0.2, 0.4) * height
            occluder = (y0, height, 0, width)
        occluder_colour = _colour(rng, saturation=(0.0, 0.6))
    frames = []
    for t in range(num_frames):
        image = background.copy()
        cx = start + speed * t
        feet = height - 0.04 * height - bob * abs(np.sin(phase + 0.6 * t))
        top = feet - body
        swing = 0.04 * body * np.sin(phase + 0.6 * t)
        half = 0.13 * body * person.width

        def part(mask: np.ndarray, colour) -> None:
            image[mask] = colour

        legs_top, legs_bottom = top + 0.52 * body, feet - 0.05 * body
        leg_half = 0.05 * body * person.width
        for side, shift in ((-1, swing), (1, -swing)):
            leg_x = cx + side * 0.055 * body * person.width + shift
            part((yy >= legs_top) & (yy < legs_bottom) & (np.abs(xx - leg_x) <= leg_half), person.bottom)
            part((yy >= legs_bottom) & (yy < feet) & (np.abs(xx - leg_x) <= leg_half * 1.3), person.shoes)
        torso_top = top + 0.14 * body
        torso = (yy >= torso_top) & (yy < legs_top) & (np.abs(xx - cx) <= half)
        part(torso, person.top)
        rows, cols = (yy - torso_top) // person.period, (xx - cx + half) // person.period
        pattern = {"hstripes": rows % 2 == 1, "vstripes": cols % 2 == 1, "checker": (rows + cols) % 2 == 1,
                   "panel": (yy >= torso_top + 0.1 * body) & (yy < torso_top + 0.25 * body)
                   & (np.abs(xx - cx) <= half * 0.5)}.get(person.texture)
        if pattern is not None:
            part(torso & pattern, person.top2)
        head_y, radius = top + 0.075 * body, 0.075 * body
        head = (yy - head_y) ** 2 + ((xx - cx) * 1.1) ** 2 <= radius ** 2
        part(head, person.skin)
        part(head & (yy < head_y - 0.2 * radius), person.hair)
        side = -1 if mirrored else 1
        if person.accessory == "backpack":
            part((yy >= torso_top + 0.03 * body) & (yy < legs_top - 0.05 * body)
                 & (side * (xx - cx) > half) & (side * (xx - cx) <= half + 0.07 * body), person.accessory_colour)
        elif person.accessory == "hat":
            part((yy >= top - 0.03 * body) & (yy < head_y - 0.3 * radius) & (np.abs(xx - cx) <= radius * 1.3),
                 person.accessory_colour)
        elif person.accessory == "bag":
            part((yy >= legs_top - 0.04 * body) & (yy < legs_top + 0.12 * body)
                 & (side * (xx - cx) > half * 0.8) & (side * (xx - cx) <= half + 0.09 * body), person.accessory_colour)
        if occluder is not None:
            y0, y1, x0, x1 = occluder
            part((yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1), occluder_colour)
        image = image * camera.gain * np.asarray(camera.cast, np.float32)
        if camera.noise:
            image += rng.normal(0, camera.noise, image.shape).astype(np.float32)
        frame = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")
        if camera.blur:
            frame = frame.filter(ImageFilter.GaussianBlur(camera.blur))
        frames.append(frame)
    return frames


def junk_tracklet(camera: Camera, num_frames: int, size: SynthVidSize, rng: np.random.Generator) -> List[Image.Image]:
    """A false detection: background with a few random blobs, no person."""
    person = random_person(rng)
    frames = []
    for frame in render_tracklet(dataclasses.replace(person, height=0.25), camera, num_frames, size, rng,
                                 occluded=True, mirrored=False):
        frames.append(frame.transpose(Image.Transpose.ROTATE_180) if rng.uniform() < 0.5 else frame)
    return frames


def _name(pid: int, cam: int, tracklet: int, frame: int) -> str:
    folder = "00-1" if pid == -1 else f"{pid:04d}"
    return f"{folder}C{cam}T{tracklet:04d}F{frame:03d}.jpg"


def _length(rng: np.random.Generator, size: SynthVidSize) -> int:
    if rng.uniform() < size.short_fraction:
        return int(rng.integers(2, 8))
    return int(rng.integers(size.min_frames, size.max_frames + 1))


def _plan(rng: np.random.Generator, pids: List[int], size: SynthVidSize) -> List[Tuple[int, int, int]]:
    """(pid, camera 1-based, length) per tracklet; the first person's first tracklet is short, and person i
    is always seen in camera i % num_cameras + 1 so that every camera appears."""
    rows = []
    for i, pid in enumerate(pids):
        count = int(rng.integers(size.min_cameras_per_id, size.max_cameras_per_id + 1))
        first = i % size.num_cameras
        others = [c for c in rng.permutation(size.num_cameras) if c != first][: count - 1]
        for cam in sorted([first, *others]):
            for _ in range(int(rng.integers(1, size.max_tracklets_per_camera + 1))):
                length = int(rng.integers(2, 8)) if not rows else _length(rng, size)
                rows.append((pid, cam + 1, length))
    return rows


def _write_split(folder: str, home: str, tracklets, size: SynthVidSize, people: Dict[int, Person],
                 cameras: List[Camera], rng: np.random.Generator) -> Tuple[List[str], np.ndarray]:
    """Render and save ``tracklets`` (pid, cam, length) under ``folder/home``; (frame names, track rows)."""
    names: List[str] = []
    rows = []
    counters: Dict[Tuple[int, int], int] = {}
    for pid, cam, length in tracklets:
        counters[(pid, cam)] = counters.get((pid, cam), 0) + 1
        camera = cameras[cam - 1]
        if pid == -1:
            frames = junk_tracklet(camera, length, size, rng)
        else:
            person = people[pid] if pid > 0 else random_person(rng)
            frames = render_tracklet(person, camera, length, size, rng, occluded=rng.uniform() < size.occlusion_probability,
                                     mirrored=bool(rng.uniform() < 0.5))
        subdir = osp.join(folder, home, "00-1" if pid == -1 else f"{pid:04d}")
        os.makedirs(subdir, exist_ok=True)
        first = len(names) + 1
        for f, frame in enumerate(frames, 1):
            name = _name(pid, cam, counters[(pid, cam)], f)
            frame.save(osp.join(subdir, name), quality=90)
            names.append(name)
        rows.append((first, len(names), pid, cam))
    return names, np.asarray(rows, dtype=np.int32).reshape(-1, 4)


def _query_rows(rng: np.random.Generator, test_rows: np.ndarray) -> np.ndarray:
    """1-based test rows of the queries: for each test person, one tracklet in every camera but one (the
    camera left out keeps a cross-camera match in the gallery)."""
    query = []
    for pid in np.unique(test_rows[:, 2]):
        if pid <= 0:
            continue
        rows = np.flatnonzero(test_rows[:, 2] == pid)
        cams = np.unique(test_rows[rows, 3])
        keep_out = rng.choice(cams)
        for cam in cams:
            if cam != keep_out:
                query.append(int(rng.choice(rows[test_rows[rows, 3] == cam])) + 1)
    return np.asarray(sorted(query), dtype=np.int32)


def _write(folder: str, seed: int, size: SynthVidSize) -> Dict[str, int]:
    rng = np.random.default_rng(seed)
    cameras = [random_camera(rng) for _ in range(size.num_cameras)]
    total = size.num_train_ids + size.num_test_ids
    train_pids: List[int] = []
    test_pids: List[int] = []
    for pid in range(1, total + 1):  # interleaved: odd pids train, even pids test, until one side is full
        full = len(test_pids) >= size.num_test_ids
        (train_pids if len(train_pids) < size.num_train_ids and (full or pid % 2) else test_pids).append(pid)
    people = {pid: random_person(rng) for pid in sorted(train_pids + test_pids)}
    train = _plan(rng, sorted(train_pids), size)
    test = [(-1, int(rng.integers(1, size.num_cameras + 1)), _length(rng, size)) for _ in range(size.num_junk)]
    test += [(0, int(rng.integers(1, size.num_cameras + 1)), _length(rng, size)) for _ in range(size.num_distractors)]
    test += _plan(rng, sorted(test_pids), size)
    info = osp.join(folder, "info")
    os.makedirs(info)
    train_names, train_rows = _write_split(folder, "bbox_train", train, size, people, cameras, rng)
    test_names, test_rows = _write_split(folder, "bbox_test", test, size, people, cameras, rng)
    query = _query_rows(rng, test_rows)
    for file, names in (("train_name.txt", train_names), ("test_name.txt", test_names)):
        with open(osp.join(info, file), "w", encoding="utf-8") as f:
            f.write("\n".join(names) + "\n")
    savemat(osp.join(info, "tracks_train_info.mat"), {"track_train_info": train_rows})
    savemat(osp.join(info, "tracks_test_info.mat"), {"track_test_info": test_rows})
    savemat(osp.join(info, "query_IDX.mat"), {"query_IDX": query[None]})
    return {"train_ids": len(train_pids), "test_ids": len(test_pids), "train_tracklets": len(train_rows),
            "test_tracklets": len(test_rows), "queries": len(query), "train_frames": len(train_names),
            "test_frames": len(test_names)}


def generate_synthvid(root: str, seed: int = 0, **size) -> str:
    """Write the benchmark to ``<root>/synthvid`` (replacing what is there) and return that path.

    ``size`` holds :class:`SynthVidSize` fields (num_train_ids, num_test_ids, num_cameras, min_frames,
    max_frames, height, width, ...). The folder appears atomically: it is written beside and renamed.
    """
    sizes = checked_size(SynthVidSize, "generate_synthvid", size)
    return generate_folder(root, DATASET_DIR, lambda staging: {
        "seed": seed, "size": dataclasses.asdict(sizes), "counts": _write(staging, seed, sizes)})


def checked_size(size_class: type, generator: str, size: Dict[str, Any]):
    """``size_class(**size)`` (a dataclass with ``check()``), checked; TypeError naming ``generator`` and the known
    fields for unknown keys, ValueError from ``check()`` for sizes the format cannot hold."""
    known = {f.name for f in dataclasses.fields(size_class)}
    unknown = sorted(set(size) - known)
    if unknown:
        raise TypeError(f"{generator} got unknown size argument(s) {unknown}; known: {', '.join(sorted(known))}")
    sizes = size_class(**size)
    sizes.check()
    return sizes


def ensure_generated(root: str, dataset_dir: str, generate: Callable[[str], str]) -> None:
    """Run ``generate(root)`` when ``<root>/<dataset_dir>`` is missing; an error is raised only when the folder is
    still missing after it (another process may have renamed its own copy into place first)."""
    target = osp.join(osp.abspath(osp.expanduser(root)), dataset_dir)
    if osp.exists(target):
        return
    try:
        generate(root)
    except OSError:
        if not osp.exists(target):
            raise


def generate_folder(root: str, dataset_dir: str, write: Callable[[str], Dict[str, Any]]) -> str:
    """Write a generated dataset to ``<root>/<dataset_dir>`` atomically and return that path: ``write(folder)``
    fills a fresh folder beside the target and returns metadata, saved as ``<dataset_dir>.json`` inside; the
    folder is then renamed into place, replacing what is there."""
    root = osp.abspath(osp.expanduser(root))
    os.makedirs(root, exist_ok=True)
    target = osp.join(root, dataset_dir)
    staging = tempfile.mkdtemp(prefix=f".{dataset_dir}-", dir=root)
    try:
        meta = write(staging)
        with open(osp.join(staging, f"{dataset_dir}.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
        if osp.exists(target):
            retired = tempfile.mkdtemp(prefix=f".{dataset_dir}-old-", dir=root)
            os.replace(target, osp.join(retired, dataset_dir))
            shutil.rmtree(retired)
        os.replace(staging, target)
    finally:
        if osp.exists(staging):
            shutil.rmtree(staging)
    return target
