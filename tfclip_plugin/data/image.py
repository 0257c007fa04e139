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

from torch.utils.data import DataLoader
from yacs.config import CfgNode as CN

from .. import host
from ..config import activated_config, imagedata_kwargs
from .frames import read_frame
from .image_transforms import ImageTransform, build_image_transforms, frame_output
from .video import install_transforms, rebuilt_loader


class CheckedImageDataset(host.ImageDataset):
    """torchreid's ``ImageDataset`` over the same tuples, reading images with :func:`~.frames.read_frame`: a
    missing or corrupt file raises ``BadFrameError`` naming it (torchreid's ``read_image`` retries an
    unreadable file forever). Items are torchreid's dicts."""

    def __getitem__(self, index: int) -> dict:
        img_path, pid, camid, dsetid = self.data[index]
        return {"img": frame_output(self.transform, read_frame(img_path)), "pid": int(pid), "camid": int(camid),
                "impath": img_path, "dsetid": int(dsetid)}


def _checked_loader(loader: DataLoader, transform: ImageTransform) -> DataLoader:
    """``loader`` over a :class:`CheckedImageDataset` of the same tuples and mode with ``transform`` (same sampler,
    batch size, workers, drop_last)."""
    dataset = loader.dataset
    return rebuilt_loader(loader, CheckedImageDataset(dataset.train, dataset.query, dataset.gallery,
                                                      transform=transform, mode=dataset.mode, verbose=False))


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
    install_transforms(datamanager, train, test, _checked_loader)
    print(f"Image transforms: train {train}\n                  test {test}")
    return datamanager
