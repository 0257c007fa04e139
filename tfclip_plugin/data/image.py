"""Image ReID data (``data.type image``): torchreid's ``ImageDataManager`` with the plugin's image transforms.

torchreid parses the image datasets (Market-1501, MSMT17, DukeMTMC-reID, CUHK03, ... and the plugin's
``synthimg``) and builds the loaders: batches ``{'img' (B, 3, H, W), 'pid', 'camid', 'impath', 'dsetid'}``,
identity-sampled training batches. :func:`build_image_datamanager` then puts the datasets behind
:class:`CheckedImageDataset` with the transforms of ``data.transforms`` (:mod:`.image_transforms`). Images are
decoded as the video frames are (:func:`~.frames.read_frame`); 'img' is uint8, normalised on the device by the
engine, except for training batches under timm's pixel eraser (``random_erase_pixel``), which are the erased
float32 images (:meth:`~.image_transforms.ImageTransform.loader_output`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from yacs.config import CfgNode as CN

from .. import host
from ..config import activated_config, imagedata_kwargs
from ..stopping import ignore_stop_signals_in_worker
from .frames import pixels_to_pil, read_frame
from .image_transforms import ImageTransform, build_image_transforms


def transformed_image(transform, path: str) -> torch.Tensor:
    """The image at ``path`` through ``transform``: an :class:`ImageTransform`'s
    :meth:`~ImageTransform.loader_output`, or any other per-image transform's output on the Pillow image."""
    pixels = read_frame(path)
    if isinstance(transform, ImageTransform):
        return transform.loader_output(pixels)
    return transform(pixels_to_pil(pixels))


class CheckedImageDataset(host.ImageDataset):
    """torchreid's ``ImageDataset`` over the same tuples, reading images with :func:`~.frames.read_frame`: a
    missing or corrupt file raises ``BadFrameError`` naming it (torchreid's ``read_image`` retries an
    unreadable file forever). Items are torchreid's dicts."""

    def __getitem__(self, index: int) -> dict:
        img_path, pid, camid, dsetid = self.data[index]
        return {"img": transformed_image(self.transform, img_path), "pid": int(pid), "camid": int(camid),
                "impath": img_path, "dsetid": int(dsetid)}


class ImageListDataset(Dataset):
    """Images of torchreid tuples ``(img_path, pid, camid[, dsetid])`` through ``transform``, in list order.

    Items: ``{'img': (3, H, W) as CheckedImageDataset's, 'index', 'pid', 'camid'}``."""

    def __init__(self, items: Sequence[tuple], transform) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        img_path, pid, camid = self.items[index][:3]
        return {"img": transformed_image(self.transform, img_path), "index": index, "pid": int(pid),
                "camid": int(camid)}


def _checked_loader(loader: DataLoader, transform: ImageTransform) -> DataLoader:
    """``loader`` over a :class:`CheckedImageDataset` of the same tuples and mode with ``transform`` (same sampler,
    batch size, workers, drop_last)."""
    dataset = loader.dataset
    checked = CheckedImageDataset(dataset.train, dataset.query, dataset.gallery, transform=transform,
                                  mode=dataset.mode, verbose=False)
    return DataLoader(checked, sampler=loader.sampler, batch_size=loader.batch_size, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      worker_init_fn=ignore_stop_signals_in_worker)


def install_image_transforms(datamanager, train: ImageTransform, test: ImageTransform) -> None:
    """Put ``train`` on the train loader and ``test`` on every query/gallery loader (as
    :class:`CheckedImageDataset`), and on ``datamanager.transform_tr`` / ``transform_te``."""
    datamanager.train_loader = _checked_loader(datamanager.train_loader, train)
    for loaders in datamanager.test_loader.values():
        for split in ("query", "gallery"):
            loaders[split] = _checked_loader(loaders[split], test)
    datamanager.transform_tr, datamanager.transform_te = train, test


def build_image_datamanager(cfg: CN):
    """torchreid's ``ImageDataManager(**imagedata_kwargs(cfg))`` with the image transforms of ``data.transforms``
    (built first, so a wrong name fails before any dataset is parsed). The datasets are built with ``cfg``
    active."""
    if cfg.data.type != "image":
        raise ValueError(f"data.type must be 'image' for image datasets; got {cfg.data.type!r}")
    train, test = build_image_transforms(
        cfg.data.height, cfg.data.width, list(cfg.data.transforms), cfg.data.norm_mean, cfg.data.norm_std,
        erase_at_size_position=cfg.tfclip.erase_at_size_position,
    )
    with activated_config(cfg):
        datamanager = host.ImageDataManager(**imagedata_kwargs(cfg))
    install_image_transforms(datamanager, train, test)
    print(f"Image transforms: train {train}\n                  test {test}")
    return datamanager
