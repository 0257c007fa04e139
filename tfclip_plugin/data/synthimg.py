"""synthimg: a generated image ReID benchmark written in Market-1501's exact file layout.

The persons, cameras and the renderer are synthvid's (:mod:`.synthvid`): a person keeps its appearance in
every camera, a camera has its own illumination, colour cast, blur, noise, background and scale. Each person
is seen in 2-4 cameras, with a few images per camera taken from one short walk (so images of one camera
differ in pose and position, as Market-1501's detections of one sequence do). As in Market-1501, the query
holds one image per test person and camera, the gallery the other images of the test persons plus
distractors (pid 0, ``0000_c...``, persons never seen elsewhere) and junk (pid -1, ``-1_c...``, false
detections that torchreid's parser drops). Deterministic for a given seed (and Pillow's JPEG encoder).

Output ``<root>/synthimg/``: ``Market-1501-v15.09.15/{bounding_box_train, bounding_box_test, query}/`` with
names ``<pid 4 digits>_c<camera>s<sequence>_<frame 6 digits>_<box 2 digits>.jpg`` (junk ``-1_c...``), and
``synthimg.json`` (seed, sizes, counts).
"""
from __future__ import annotations

import dataclasses
import os
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
from PIL import Image

from .synthvid import SynthVidSize, checked_size, generate_folder, junk_tracklet, random_camera, random_person, render_tracklet

DATASET_DIR = "synthimg"
MARKET_DIR = "Market-1501-v15.09.15"
MAX_CAMERAS = 6  # Market-1501 names hold one camera digit and torchreid's parser checks 1..6
MAX_PID = 1501  # torchreid's Market-1501 parser checks 0 <= pid <= 1501
MAX_SEQUENCES = 6


@dataclass(frozen=True)
class SynthImgSize:
    """Sizes of a generated image benchmark (keyword arguments of :func:`generate_synthimg`).

    The defaults (about 700 images of 64x32) generate in a few seconds on one core.
    """

    num_train_ids: int = 24
    num_test_ids: int = 24
    num_cameras: int = 6
    min_cameras_per_id: int = 2
    max_cameras_per_id: int = 4
    min_images_per_camera: int = 2
    max_images_per_camera: int = 5
    num_junk: int = 10  # pid -1 images in bounding_box_test
    num_distractors: int = 10  # pid 0 images in bounding_box_test
    occlusion_probability: float = 0.3
    height: int = 64
    width: int = 32

    def check(self) -> None:
        """ValueError for sizes Market-1501's format or the split logic cannot hold."""
        if not 2 <= self.num_cameras <= MAX_CAMERAS:
            raise ValueError(f"num_cameras must lie in [2, {MAX_CAMERAS}] (Market-1501 format); got {self.num_cameras}")
        if not 2 <= self.min_cameras_per_id <= self.max_cameras_per_id <= self.num_cameras:
            raise ValueError("need 2 <= min_cameras_per_id <= max_cameras_per_id <= num_cameras")
        if self.num_train_ids < 1 or self.num_test_ids < 1 or self.num_train_ids + self.num_test_ids > MAX_PID:
            raise ValueError(f"need 1 or more train and test ids, {MAX_PID} at most in all (Market-1501 pids)")
        if not 2 <= self.min_images_per_camera <= self.max_images_per_camera:
            raise ValueError("need 2 <= min_images_per_camera <= max_images_per_camera (a query image per camera "
                             "leaves one in the gallery)")
        if self.num_junk < 0 or self.num_distractors < 0:
            raise ValueError("num_junk and num_distractors must be >= 0")
        if self.height < 16 or self.width < 8:
            raise ValueError(f"images must be at least 16x8; got {self.height}x{self.width}")


def market_name(pid: int, cam: int, sequence: int, frame: int, box: int = 1) -> str:
    """A Market-1501 file name: ``0002_c1s1_000451_03.jpg`` (junk pid -1: ``-1_c1s1_000451_03.jpg``)."""
    person = "-1" if pid == -1 else f"{pid:04d}"
    return f"{person}_c{cam}s{sequence}_{frame:06d}_{box:02d}.jpg"


class _Writer:
    """Saves images under one split folder with unique Market names (frame numbers count up per camera)."""

    def __init__(self, folder: str, frame_counters: Dict[int, int]) -> None:
        self.folder = folder
        self.frames = frame_counters
        self.names: List[str] = []
        os.makedirs(folder, exist_ok=True)

    def save(self, image: Image.Image, pid: int, cam: int, sequence: int) -> str:
        self.frames[cam] = self.frames.get(cam, 0) + 25  # Market frame numbers step by 25 (1 fps at 25 fps)
        name = market_name(pid, cam, sequence, self.frames[cam])
        image.save(osp.join(self.folder, name), quality=90)
        self.names.append(name)
        return name


def _person_images(rng: np.random.Generator, person, cameras, size: SynthImgSize, render: SynthVidSize):
    """{camera (1-based): (sequence, [images])}: the person in 2-4 cameras, a few images of one walk each."""
    count = int(rng.integers(size.min_cameras_per_id, size.max_cameras_per_id + 1))
    chosen = sorted(int(c) + 1 for c in rng.permutation(size.num_cameras)[:count])
    shots = {}
    for cam in chosen:
        images = int(rng.integers(size.min_images_per_camera, size.max_images_per_camera + 1))
        walk = render_tracklet(person, cameras[cam - 1], 3 * images, render, rng,
                               occluded=rng.uniform() < size.occlusion_probability, mirrored=bool(rng.uniform() < 0.5))
        shots[cam] = (int(rng.integers(1, MAX_SEQUENCES + 1)), walk[::3])
    return shots


def _write(folder: str, seed: int, size: SynthImgSize) -> Dict[str, int]:
    rng = np.random.default_rng(seed)
    render = SynthVidSize(height=size.height, width=size.width)
    cameras = [random_camera(rng) for _ in range(size.num_cameras)]
    total = size.num_train_ids + size.num_test_ids
    train_pids: List[int] = []
    test_pids: List[int] = []
    for pid in range(1, total + 1):  # interleaved: odd pids train, even pids test, until one side is full
        full = len(test_pids) >= size.num_test_ids
        (train_pids if len(train_pids) < size.num_train_ids and (full or pid % 2) else test_pids).append(pid)
    people = {pid: random_person(rng) for pid in range(1, total + 1)}
    base = osp.join(folder, MARKET_DIR)
    frames: Dict[int, int] = {}
    train = _Writer(osp.join(base, "bounding_box_train"), frames)
    gallery = _Writer(osp.join(base, "bounding_box_test"), frames)
    query = _Writer(osp.join(base, "query"), frames)
    for pid in train_pids:
        for cam, (sequence, images) in _person_images(rng, people[pid], cameras, size, render).items():
            for image in images:
                train.save(image, pid, cam, sequence)
    for pid in test_pids:
        for cam, (sequence, images) in _person_images(rng, people[pid], cameras, size, render).items():
            chosen = int(rng.integers(len(images)))
            for i, image in enumerate(images):
                (query if i == chosen else gallery).save(image, pid, cam, sequence)
    gallery_persons = len(gallery.names)
    for _ in range(size.num_distractors):
        cam = int(rng.integers(1, size.num_cameras + 1))
        image = render_tracklet(random_person(rng), cameras[cam - 1], 1, render, rng,
                                occluded=rng.uniform() < size.occlusion_probability, mirrored=bool(rng.uniform() < 0.5))
        gallery.save(image[0], 0, cam, int(rng.integers(1, MAX_SEQUENCES + 1)))
    for _ in range(size.num_junk):
        cam = int(rng.integers(1, size.num_cameras + 1))
        junk = junk_tracklet(cameras[cam - 1], 1, render, rng)[0]
        gallery.save(junk, -1, cam, int(rng.integers(1, MAX_SEQUENCES + 1)))
    return {"train_ids": len(train_pids), "test_ids": len(test_pids), "train_images": len(train.names),
            "query_images": len(query.names), "gallery_images": gallery_persons + size.num_distractors,
            "distractor_images": size.num_distractors, "junk_images": size.num_junk}


def generate_synthimg(root: str, seed: int = 0, **size) -> str:
    """Write the benchmark to ``<root>/synthimg`` (replacing what is there) and return that path.

    ``size`` holds :class:`SynthImgSize` fields. ``gallery_images`` in ``synthimg.json`` counts what torchreid's
    parser keeps (test persons and distractors; the junk images are on disk but dropped). The folder appears
    atomically: it is written beside and renamed.
    """
    sizes = checked_size(SynthImgSize, "generate_synthimg", size)
    return generate_folder(root, DATASET_DIR, lambda staging: {
        "seed": seed, "size": dataclasses.asdict(sizes), "counts": _write(staging, seed, sizes)})

