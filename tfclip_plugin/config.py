"""Configuration: torchreid's ``scripts/default_config.py`` keys plus the ``tfclip`` node.

The torchreid part keeps torchreid's key names so that its configs and command lines carry over;
the defaults are changed to the video/TF-CLIP setting (8-frame clips, identity sampler, Adam 5e-6).
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Optional

from yacs.config import CfgNode as CN


def get_default_config() -> CN:
    """A fresh config with every key the CLI, the engine and the model builders read."""
    cfg = CN()
    cfg.use_gpu = False

    cfg.model = CN()
    cfg.model.name = "tfclip_vit"
    cfg.model.pretrained = True  # tfclip_*: load tfclip.clip_weights; torchreid models: ImageNet weights
    cfg.model.load_weights = ""  # weights to evaluate or fine-tune (ours, official TF-CLIP, torchreid)
    cfg.model.resume = ""  # checkpoint to resume training from

    cfg.data = CN()
    cfg.data.type = "video"
    cfg.data.root = "reid-data"
    cfg.data.sources = ["mars"]
    cfg.data.targets = ["mars"]
    cfg.data.workers = 4
    cfg.data.split_id = 0
    cfg.data.height = 256
    cfg.data.width = 128
    cfg.data.combineall = False
    cfg.data.transforms = ["random_flip", "random_erase"]
    cfg.data.k_tfm = 1
    cfg.data.norm_mean = [0.485, 0.456, 0.406]  # ImageNet, as the reference (CLIP's: 0.4815, 0.4578, 0.4082)
    cfg.data.norm_std = [0.229, 0.224, 0.225]  # (CLIP's: 0.2686, 0.2613, 0.2758)
    cfg.data.save_dir = "log"
    cfg.data.load_train_targets = False

    cfg.market1501 = CN()
    cfg.market1501.use_500k_distractors = False
    cfg.cuhk03 = CN()
    cfg.cuhk03.labeled_images = False
    cfg.cuhk03.classic_split = False
    cfg.cuhk03.use_metric_cuhk03 = False

    cfg.sampler = CN()
    cfg.sampler.train_sampler = "RandomIdentitySampler"
    cfg.sampler.train_sampler_t = "RandomSampler"
    cfg.sampler.num_instances = 4
    cfg.sampler.num_cams = 1
    cfg.sampler.num_datasets = 1

    cfg.video = CN()
    cfg.video.seq_len = 8
    cfg.video.sample_method = "rrs"  # plugin datasets: RRS in train mode, RRS-test in query/gallery
    cfg.video.pooling_method = "avg"

    cfg.train = CN()
    cfg.train.optim = "adam"
    cfg.train.lr = 5e-6
    cfg.train.weight_decay = 1e-4
    cfg.train.max_epoch = 80
    cfg.train.start_epoch = 0
    cfg.train.batch_size = 16
    cfg.train.fixbase_epoch = 0
    cfg.train.open_layers = ["classifier"]
    cfg.train.staged_lr = False
    cfg.train.new_layers = ["classifier"]
    cfg.train.base_lr_mult = 0.1
    cfg.train.lr_scheduler = "multi_step"
    cfg.train.stepsize = [30, 50, 70]
    cfg.train.gamma = 0.1
    cfg.train.print_freq = 20
    cfg.train.seed = 1234

    cfg.sgd = CN()
    cfg.sgd.momentum = 0.9
    cfg.sgd.dampening = 0.0
    cfg.sgd.nesterov = False
    cfg.rmsprop = CN()
    cfg.rmsprop.alpha = 0.99
    cfg.adam = CN()
    cfg.adam.beta1 = 0.9
    cfg.adam.beta2 = 0.999

    cfg.loss = CN()
    cfg.loss.name = "triplet"  # for torchreid baselines: 'softmax' or 'triplet' (torchreid's video engines)
    cfg.loss.softmax = CN()
    cfg.loss.softmax.label_smooth = True
    cfg.loss.triplet = CN()
    cfg.loss.triplet.margin = 0.3
    cfg.loss.triplet.weight_t = 1.0
    cfg.loss.triplet.weight_x = 1.0

    cfg.test = CN()
    cfg.test.batch_size = 32  # clips per forward in evaluation and memory construction
    cfg.test.dist_metric = "euclidean"
    cfg.test.normalize_feature = True
    cfg.test.ranks = [1, 5, 10, 20]
    cfg.test.evaluate = False
    cfg.test.eval_freq = -1
    cfg.test.start_eval = 0
    cfg.test.rerank = False
    cfg.test.visrank = False
    cfg.test.visrank_topk = 10

    cfg.tfclip = CN()
    # model
    cfg.tfclip.clip_weights = ""  # '' random init; file (OpenAI TorchScript, state dict, open_clip ckpt); 'openai'
    cfg.tfclip.memory = True  # CLIP-Memory + SSP + V2M loss (False: supplement Table 7 'without CLIP-M';
    # the A1/B2 rows of Tables 3-5 keep the memory: ssp 'none', temporal 'tap')
    cfg.tfclip.ssp = "paper"  # 'paper' | 'released' | 'none'
    cfg.tfclip.ssp_layers = 2
    cfg.tfclip.temporal = "tmd"  # 'tmd' | 'tap' | 'conv1d' | 'transf' | 'transf_cls'
    cfg.tfclip.sie = True
    cfg.tfclip.sie_coe = 1.0
    cfg.tfclip.stride = 16
    cfg.tfclip.num_cameras = 0  # SIE rows; 0 = the training set's camera count
    cfg.tfclip.vision_width = 0  # 0 = the architecture's own (smaller values build tiny towers)
    cfg.tfclip.vision_layers = 0
    cfg.tfclip.embed_dim = 0
    cfg.tfclip.grad_checkpointing = False
    # losses (tfclip-reference.md section 5.1)
    cfg.tfclip.v2m_loss_weight = 1.0
    cfg.tfclip.id_loss_weight = 0.25
    cfg.tfclip.triplet_loss_weight = 1.0
    cfg.tfclip.label_smooth = 0.1
    cfg.tfclip.margin = 0.3
    # optimizer and schedule (sections 5.3, 5.4)
    cfg.tfclip.bias_lr_mult = 2.0
    cfg.tfclip.bias_weight_decay = 1e-4
    cfg.tfclip.fc_lr_mult = 10.0  # classifier_proj_temp heads (LARGE_FC_LR)
    cfg.tfclip.prompt_lr_mult = 10.0  # SSP and temporal module (what the checkpoint-producing code applied)
    cfg.tfclip.warmup_epochs = 10
    cfg.tfclip.warmup_factor = 0.1
    cfg.tfclip.precision = "fp32"  # 'fp32' | 'bf16' | 'fp16' (autocast; GradScaler only for fp16)
    cfg.tfclip.test_precision = ""  # phase 1 and evaluation (autocast; bf16 also with a bf16 copy of the weights):
    # '' = tfclip.precision; 'fp32' | 'bf16' | 'fp16'
    cfg.tfclip.compile = ""  # torch.compile mode of the training forward: '' off | 'default' | 'reduce-overhead' | ...
    # data
    cfg.tfclip.erase_at_size_position = False  # reproduce the reference's paste-position quirk (section 5.7)
    cfg.tfclip.lsvid_subtracklet = 48  # LS-VID training pieces of this many frames; 0 = whole tracklets
    cfg.tfclip.skip_bad_frames = False  # replace unreadable frames (warning + count) instead of failing
    # phase 1 and evaluation
    cfg.tfclip.memory_cache = ""  # directory for cached CLIP-Memories ('' = no cache)
    cfg.tfclip.protocol = "tfclip"  # 'tfclip' | 'torchreid' | 'official'
    cfg.tfclip.test_sampling = "dense"  # 'dense' | 'rrs'
    cfg.tfclip.select_on_test = False  # the reference's test-set best-epoch selection (not a clean protocol)
    cfg.tfclip.all_splits = False  # iLIDS-VID / PRID2011: run the 10 splits, report mean and std
    cfg.tfclip.save_test_outputs = True  # keep features, ids and ranks for `tfclip-reid report`
    # multi-process training (torchrun, docs/distributed.md)
    cfg.tfclip.sync_bn = False  # BNNecks as SyncBatchNorm: global-batch statistics (GPUs only)
    return cfg


_ACTIVE: Optional[CN] = None


def set_active_config(cfg: Optional[CN]) -> None:
    """Make ``cfg`` the config that ``torchreid.models.build_model('tfclip_*', ...)`` reads."""
    global _ACTIVE
    _ACTIVE = cfg


def active_config() -> CN:
    """The config set by :func:`set_active_config`, else the defaults."""
    return _ACTIVE if _ACTIVE is not None else get_default_config()


@contextlib.contextmanager
def activated_config(cfg: CN) -> Iterator[CN]:
    """``cfg`` is the active config inside the ``with`` block; the previous one is restored afterwards."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, cfg
    try:
        yield cfg
    finally:
        _ACTIVE = previous


def tfclip_options(cfg: CN) -> Dict[str, Any]:
    """The ``tfclip`` node as a plain dict (the keyword arguments of ``build_tfclip``)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.tfclip.items()}


def videodata_kwargs(cfg: CN) -> Dict[str, Any]:
    """Keyword arguments for torchreid's ``VideoDataManager`` (as upstream ``scripts/default_config``)."""
    return {
        "root": cfg.data.root,
        "sources": cfg.data.sources,
        "targets": cfg.data.targets,
        "height": cfg.data.height,
        "width": cfg.data.width,
        "transforms": cfg.data.transforms,
        "norm_mean": cfg.data.norm_mean,
        "norm_std": cfg.data.norm_std,
        "use_gpu": cfg.use_gpu,
        "split_id": cfg.data.split_id,
        "combineall": cfg.data.combineall,
        "batch_size_train": cfg.train.batch_size,
        "batch_size_test": cfg.test.batch_size,
        "workers": cfg.data.workers,
        "num_instances": cfg.sampler.num_instances,
        "num_cams": cfg.sampler.num_cams,
        "num_datasets": cfg.sampler.num_datasets,
        "train_sampler": cfg.sampler.train_sampler,
        "seq_len": cfg.video.seq_len,
        "sample_method": cfg.video.sample_method,
    }


def engine_run_kwargs(cfg: CN) -> Dict[str, Any]:
    """Keyword arguments for ``Engine.run`` (as upstream ``scripts/default_config``)."""
    return {
        "save_dir": cfg.data.save_dir,
        "max_epoch": cfg.train.max_epoch,
        "start_epoch": cfg.train.start_epoch,
        "fixbase_epoch": cfg.train.fixbase_epoch,
        "open_layers": cfg.train.open_layers,
        "start_eval": cfg.test.start_eval,
        "eval_freq": cfg.test.eval_freq,
        "test_only": cfg.test.evaluate,
        "print_freq": cfg.train.print_freq,
        "dist_metric": cfg.test.dist_metric,
        "normalize_feature": cfg.test.normalize_feature,
        "visrank": cfg.test.visrank,
        "visrank_topk": cfg.test.visrank_topk,
        "use_metric_cuhk03": cfg.cuhk03.use_metric_cuhk03,
        "ranks": cfg.test.ranks,
        "rerank": cfg.test.rerank,
    }
