"""The tiny setting of the engine tests: a small generated synthvid and a tiny TF-CLIP config."""
from __future__ import annotations

from yacs.config import CfgNode as CN

from tfclip_plugin.config import get_default_config

SYNTHVID_SIZE = dict(num_train_ids=8, num_test_ids=8, num_cameras=3, max_cameras_per_id=3, min_frames=6,
                     max_frames=14, num_junk=2, num_distractors=2)


def tiny_config(root: str, save_dir: str, *opts: str) -> CN:
    """A 2-epoch TF-CLIP ViT of width 64, 2 layers, embed 64 on 64x32 frames, 4-frame clips, CPU, no workers;
    ``opts`` are KEY VALUE overrides."""
    cfg = get_default_config()
    cfg.merge_from_list([
        "model.pretrained", "False", "data.sources", "['synthvid']", "data.targets", "['synthvid']",
        "data.root", root, "data.save_dir", save_dir, "data.height", "64", "data.width", "32", "data.workers", "0",
        "train.lr", "3e-4", "train.max_epoch", "2", "train.stepsize", "[10]", "train.print_freq", "1",
        "tfclip.vision_width", "64", "tfclip.vision_layers", "2", "tfclip.embed_dim", "64",
        "tfclip.warmup_epochs", "1", "video.seq_len", "4", *opts,
    ])
    return cfg


# "+CLIP-M" (CLIP-Memory, no SSP, no temporal module, no SIE) with a one-layer ViT of width 64, embed 64, on 64x32
# images, batches of 8 identities x 4 images, CPU, no workers, 2 epochs (KEY VALUE options of the command line)
TINY_IMAGE_OPTS = (
    "model.pretrained", "False", "data.type", "image", "data.height", "64", "data.width", "32", "data.workers", "0",
    "data.transforms", "['random_flip']", "train.lr", "3e-4", "train.max_epoch", "2", "train.stepsize", "[100]",
    "train.print_freq", "1", "train.batch_size", "32", "test.batch_size", "64", "tfclip.vision_width", "64",
    "tfclip.vision_layers", "1", "tfclip.embed_dim", "64", "tfclip.warmup_epochs", "1", "tfclip.ssp", "none",
    "tfclip.temporal", "tap", "tfclip.sie", "False",
)


def tiny_image_config(root: str, save_dir: str, *opts: str) -> CN:
    """The :data:`TINY_IMAGE_OPTS` run on synthimg under ``root`` (generated there when missing); ``opts`` are
    KEY VALUE overrides."""
    cfg = get_default_config()
    cfg.merge_from_list(["data.sources", "['synthimg']", "data.targets", "['synthimg']", "data.root", root,
                         "data.save_dir", save_dir, *TINY_IMAGE_OPTS, *opts])
    return cfg
