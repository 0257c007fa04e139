"""Configuration: torchreid's ``scripts/default_config.py`` keys plus the ``tfclip`` node, declared once.

Every key is a :class:`Key` in :data:`KEYS`: its default, what it means, which part of the plugin reads it,
and which runs it applies to ('all', 'tfclip' = ``tfclip_*`` models, 'torchreid' = torchreid's models on its
video engines). Keys that only keep torchreid's configs and command lines working say so ('torchreid-compat').
:func:`get_default_config` builds the yacs tree from the table, ``docs/config.md`` is generated from it
(``python -m tfclip_plugin.config_doc``), and :func:`warn_ineffective_keys` names the keys a run sets that
cannot affect it. The model keys take their defaults from :class:`~tfclip_plugin.models.ModelOptions`.

The torchreid part keeps torchreid's key names so that its configs and command lines carry over; the defaults
are changed to the video/TF-CLIP setting (8-frame clips, identity sampler, Adam 5e-6).

The *active* config (:func:`set_active_config`, :func:`activated_config`) exists only for callers the plugin
does not control: torchreid's ``build_model`` from its own scripts, torchreid's ``FeatureExtractor`` and dataset
classes built by torchreid's data managers. The plugin's own runs pass their config explicitly.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, fields
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from yacs.config import CfgNode as CN

from .models.options import ModelOptions, memory_mode

APPLIES_TO = ("all", "tfclip", "torchreid", "torchreid-compat")


@dataclass(frozen=True)
class Key:
    """One config key.

    name: dotted path (``tfclip.memory``).
    default: its default value (its type is the type yacs enforces).
    help: what it means.
    read_by: the modules of ``tfclip_plugin`` that read it, comma-separated (``engine.optim``: a module;
        ``engine``: any module of that package; '-': none, for torchreid-compat keys).
    applies_to: 'all' runs, 'tfclip' (``tfclip_*`` models), 'torchreid' (torchreid's models), or
        'torchreid-compat' (no effect on any run; kept so torchreid configs and command lines load).
    """

    name: str
    default: Any
    help: str
    read_by: str
    applies_to: str = "all"

    def __post_init__(self) -> None:
        if self.applies_to not in APPLIES_TO:
            raise ValueError(f"config key {self.name}: applies_to must be one of {', '.join(APPLIES_TO)}; "
                             f"got {self.applies_to!r}")


_MODEL = {f.name: f.default for f in fields(ModelOptions)}


def _model_key(name: str, help_text: str) -> Key:
    return Key(f"tfclip.{name}", _MODEL[name], help_text, "models.options", "tfclip")


KEYS: Tuple[Key, ...] = (
    Key("use_gpu", False, "train and test on CUDA (the CLI sets it when a GPU is visible)",
        "cli, engine.build, engine.engine, engine.baselines"),
    # model
    Key("model.name", "tfclip_vit", "tfclip_vit, tfclip_rn50 or any torchreid model name",
        "cli, engine.build, interop"),
    Key("model.pretrained", True, "tfclip_*: load tfclip.clip_weights; torchreid models: ImageNet weights",
        "engine.build"),
    Key("model.load_weights", "", "weights to evaluate or fine-tune (ours, official TF-CLIP, torchreid files)",
        "engine.runner"),
    Key("model.resume", "", "training checkpoint to resume from (model/checkpoint-latest.pth.tar); 'auto': "
        "data.save_dir's latest checkpoint when there is one, else start fresh (docs/distributed.md)",
        "engine.runner, engine.recovery"),
    # data
    Key("data.type", "video", "'video' (tracklet datasets, torchreid's VideoDataManager) or 'image' (image "
        "datasets such as market1501 and msmt17, torchreid's ImageDataManager; docs/image-reid.md)",
        "data.managers, engine.mixins"),
    Key("data.root", "reid-data", "folder holding the datasets", "config"),
    Key("data.sources", ["mars"], "training datasets", "config"),
    Key("data.targets", ["mars"], "test datasets", "config"),
    Key("data.workers", 4, "DataLoader workers (training, dense test, CLIP-Memory)",
        "config, engine.engine, engine.mixins"),
    Key("data.split_id", 0, "split of iLIDS-VID / PRID2011", "config, engine.runner"),
    Key("data.height", 256, "input height", "config, data.video, engine.build"),
    Key("data.width", 128, "input width", "config, data.video, engine.build"),
    Key("data.combineall", False, "train on train + query + gallery", "config"),
    Key("data.transforms", ["random_flip", "random_erase"], "training augmentations: random_flip, random_erase; "
        "image data also resize_bicubic, pad_crop, random_erase_pixel (docs/image-reid.md)", "data.video"),
    Key("data.k_tfm", 1, "torchreid's image data: augmented copies per image", "-", "torchreid-compat"),
    Key("data.norm_mean", [0.485, 0.456, 0.406],
        "normalisation mean (ImageNet, as the reference; CLIP's is 0.4815, 0.4578, 0.4082); applied to uint8 batches "
        "on the device", "data.video, data.image, engine.mixins"),
    Key("data.norm_std", [0.229, 0.224, 0.225], "normalisation std (CLIP's: 0.2686, 0.2613, 0.2758)",
        "data.video, data.image, engine.mixins"),
    Key("data.save_dir", "log", "run folder: logs, checkpoints, results.json, test outputs",
        "engine.runner, engine.mixins"),
    Key("data.load_train_targets", False, "torchreid's image data: add the targets' training sets", "-",
        "torchreid-compat"),
    Key("market1501.use_500k_distractors", False, "image data: torchreid's Market-1501 option (the 500k "
        "distractor images join the gallery)", "config"),
    Key("cuhk03.labeled_images", False, "image data: torchreid's CUHK03 option (labeled instead of detected boxes)",
        "config"),
    Key("cuhk03.classic_split", False, "image data: torchreid's CUHK03 option (the classic split)",
        "config"),
    Key("cuhk03.use_metric_cuhk03", False, "torchreid's CUHK03 metric (not used by the plugin's protocols)", "-",
        "torchreid-compat"),
    # sampler
    Key("sampler.train_sampler", "RandomIdentitySampler", "RandomIdentitySampler (P x K) or RandomSampler",
        "config, engine.engine"),
    Key("sampler.train_sampler_t", "RandomSampler", "torchreid's sampler of target training sets", "-",
        "torchreid-compat"),
    Key("sampler.num_instances", 4, "tracklets (images, with image data) per identity in a batch (K)",
        "config, engine.engine"),
    Key("sampler.num_cams", 1, "torchreid's RandomDomainSampler option", "config",
        "torchreid-compat"),
    Key("sampler.num_datasets", 1, "torchreid's RandomDatasetSampler option", "config",
        "torchreid-compat"),
    # video
    Key("video.seq_len", 8, "frames per clip (training clips, dense test chunks, CLIP-Memory chunks)",
        "config, engine.engine, engine.mixins"),
    Key("video.sample_method", "rrs", "'rrs' (RRS train / RRS-test) or torchreid's 'evenly', 'random', 'all'",
        "config, data.video"),
    Key("video.pooling_method", "avg", "torchreid's video engines: frame-feature pooling", "engine.baselines",
        "torchreid"),
    # train
    Key("train.optim", "adam", "'adam' or 'sgd' (TF-CLIP); any torchreid optimizer for torchreid models",
        "engine.optim, engine.build"),
    Key("train.lr", 5e-6, "base learning rate", "engine.optim, engine.build"),
    Key("train.weight_decay", 1e-4, "weight decay (coupled L2, as the reference)", "engine.optim, engine.build"),
    Key("train.max_epoch", 80, "training epochs", "config"),
    Key("train.start_epoch", 0, "first epoch (resume sets it)", "config"),
    Key("train.batch_size", 16, "tracklets (images, with image data) per batch (P x K)", "config, engine.engine"),
    Key("train.fixbase_epoch", 0, "torchreid: epochs training only train.open_layers (must be 0 for TF-CLIP)",
        "config, engine.engine"),
    Key("train.open_layers", ["classifier"], "torchreid: layers trained during fixbase epochs",
        "config", "torchreid"),
    Key("train.staged_lr", False, "torchreid's optimizer: lower lr for the base layers", "engine.build", "torchreid"),
    Key("train.new_layers", ["classifier"], "torchreid's optimizer: layers at the full lr (staged_lr)", "engine.build",
        "torchreid"),
    Key("train.base_lr_mult", 0.1, "torchreid's optimizer: base-layer lr factor (staged_lr)", "engine.build",
        "torchreid"),
    Key("train.lr_scheduler", "multi_step", "torchreid's scheduler (TF-CLIP: warm-up multi-step, tfclip.warmup_*)",
        "engine.build", "torchreid"),
    Key("train.stepsize", [30, 50, 70], "epochs at which the lr is multiplied by train.gamma",
        "engine.optim, engine.build"),
    Key("train.gamma", 0.1, "lr decay factor at each step", "engine.optim, engine.build"),
    Key("train.print_freq", 20, "iterations between log lines", "config"),
    Key("train.seed", 1234, "random seed (python, numpy, torch)", "engine.runner, engine.engine"),
    Key("sgd.momentum", 0.9, "SGD momentum", "engine.optim, engine.build"),
    Key("sgd.dampening", 0.0, "SGD dampening", "engine.optim, engine.build"),
    Key("sgd.nesterov", False, "SGD Nesterov momentum", "engine.optim, engine.build"),
    Key("rmsprop.alpha", 0.99, "torchreid's RMSprop", "engine.build", "torchreid"),
    Key("adam.beta1", 0.9, "Adam beta1", "engine.optim, engine.build"),
    Key("adam.beta2", 0.999, "Adam beta2", "engine.optim, engine.build"),
    # loss
    Key("loss.name", "triplet", "torchreid models: 'softmax' or 'triplet' (torchreid's video engines)",
        "engine.build", "torchreid"),
    Key("loss.softmax.label_smooth", True,
        "label-smoothed cross-entropy, eps 0.1 (every ID and V2M term of TF-CLIP; torchreid's engines)",
        "engine.engine, engine.baselines"),
    Key("loss.triplet.margin", 0.3, "batch-hard triplet margin (TF-CLIP and torchreid's engines)",
        "engine.engine, engine.baselines"),
    Key("loss.triplet.weight_t", 1.0, "torchreid's two-term loss: triplet weight (TF-CLIP: "
        "tfclip.triplet_loss_weight)", "engine.baselines", "torchreid"),
    Key("loss.triplet.weight_x", 1.0, "torchreid's two-term loss: softmax weight (TF-CLIP: tfclip.id_loss_weight)",
        "engine.baselines", "torchreid"),
    # test
    Key("test.batch_size", 32, "clips (images) per forward in evaluation and memory construction",
        "config, engine.engine, engine.mixins"),
    Key("test.dist_metric", "euclidean", "'euclidean' or 'cosine'", "config"),
    Key("test.normalize_feature", True, "L2-normalise features before the distance", "config"),
    Key("test.ranks", [1, 5, 10, 20], "CMC ranks printed and reported", "config, engine.runner"),
    Key("test.evaluate", False, "test only (no training)", "config, engine.runner, engine.mixins"),
    Key("test.eval_freq", -1, "evaluate every N epochs during training (-1: at the end only)",
        "config"),
    Key("test.start_eval", 0, "first epoch that may evaluate", "config"),
    Key("test.rerank", False, "k-reciprocal re-ranking (torchreid's)", "config"),
    Key("test.visrank", False, "write ranked-result images (torchreid's visrank)", "config"),
    Key("test.visrank_topk", 10, "gallery items per visrank row", "config"),
    # tfclip: model (ModelOptions)
    _model_key("clip_weights", "'' random init; a CLIP file (OpenAI TorchScript archive, state dict, open_clip "
               "checkpoint); 'openai' = open_clip's download"),
    _model_key("memory", "'clip': CLIP-Memory + SSP + V2M loss; 'text': CLIP-ReID's learned prompts and CLIP's text "
               "encoder (stage 1, then the image-to-text loss; rows B1/B5 with ssp 'none'); 'none': neither "
               "(supplement Table 7 'without CLIP-M'). True/False = 'clip'/'none'"),
    _model_key("ssp", "'paper' | 'released' | 'none' (docs/models.md)"),
    _model_key("ssp_layers", "SSP decoder layers"),
    _model_key("ssp_residual", "'update' (V2M against M + delta) | 'pre-release' (against 2M + delta, the code of the "
               "LS-VID and iLIDS-VID checkpoints; paper SSP)"),
    _model_key("temporal", "'tmd' | 'tmc' (TMD without MD) | 'tap' | 'conv1d' | 'transf' | 'transf_cls'"),
    _model_key("sie", "camera embedding on the ViT's CLS token (off for tfclip_rn50)"),
    _model_key("sie_coe", "scale of the camera embedding"),
    _model_key("stride", "ViT patch stride (16; 12 = overlapping patches)"),
    _model_key("vision_width", "visual tower width; 0 = the architecture's own (small values: tiny towers)"),
    _model_key("vision_layers", "visual transformer layers; 0 = the architecture's own"),
    _model_key("embed_dim", "joint embedding size; 0 = the architecture's own"),
    _model_key("text_width", "text tower width (tfclip.memory text); 0 = the architecture's own (512)"),
    _model_key("text_layers", "text transformer layers (tfclip.memory text); 0 = the architecture's own (12)"),
    _model_key("grad_checkpointing", "activation checkpointing of the visual blocks (less memory, slower)"),
    Key("tfclip.num_cameras", 0, "SIE rows; 0 = the training set's camera count", "engine.build, registry, interop",
        "tfclip"),
    # tfclip: losses
    Key("tfclip.v2m_loss_weight", 1.0, "weight of the video-to-memory cross-entropy", "engine.engine", "tfclip"),
    Key("tfclip.id_loss_weight", 0.25, "weight of the ID cross-entropy summed over the sequence heads", "engine.engine",
        "tfclip"),
    Key("tfclip.triplet_loss_weight", 1.0, "weight of the triplet losses summed over the features", "engine.engine",
        "tfclip"),
    # tfclip: optimizer and schedule
    Key("tfclip.bias_lr_mult", 2.0, "lr factor of biases", "engine.optim", "tfclip"),
    Key("tfclip.bias_weight_decay", 1e-4, "weight decay of biases", "engine.optim", "tfclip"),
    Key("tfclip.fc_lr_mult", 10.0, "lr factor of the classifier_proj_temp heads (the reference's LARGE_FC_LR)",
        "engine.optim", "tfclip"),
    Key("tfclip.prompt_lr_mult", 10.0, "lr factor of the SSP and temporal modules (what the checkpoint-producing "
        "code applied)", "engine.optim", "tfclip"),
    Key("tfclip.warmup_epochs", 10, "linear warm-up epochs", "engine.optim", "tfclip"),
    Key("tfclip.warmup_factor", 0.1, "lr factor at the first epoch of the warm-up", "engine.optim", "tfclip"),
    Key("tfclip.precision", "fp32", "training autocast: 'fp32' | 'bf16' | 'fp16' (GradScaler for fp16)",
        "engine.engine, engine.mixins",
        "tfclip"),
    Key("tfclip.test_precision", "", "phase 1, stage-1 features and evaluation autocast: '' = tfclip.precision; "
        "'fp32' | 'bf16' (also with a bfloat16 copy of the weights; the fp32 weights keep training) | 'fp16'",
        "engine.mixins"),
    Key("tfclip.compile", "", "torch.compile mode of the training forward: '' off | 'default' | 'reduce-overhead' | "
        "'max-autotune' | 'max-autotune-no-cudagraphs' (minutes of compilation on a first run; checkpoints keep the "
        "plain module's names)", "engine.engine", "tfclip"),
    # tfclip: data
    Key("tfclip.erase_at_size_position", False, "random erasing pasted at the rectangle's size, as the reference's "
        "code does (docs/models.md, 'Where we differ')", "data.video"),
    Key("tfclip.lsvid_subtracklet", 48, "LS-VID training pieces of this many frames; 0 = whole tracklets",
        "data.datasets.lsvid"),
    Key("tfclip.ilidsvid_train_stride", 0, "ilidsvid: training items are windows of video.seq_len consecutive "
        "frames, one every N frames (the reference's iLIDS-VID training: 4); 0 = whole tracklets",
        "data.datasets.ilidsvid"),
    Key("tfclip.skip_bad_frames", False, "replace unreadable frames by a neighbour (warning + count) instead of "
        "failing", "data.frames, data.video"),
    # tfclip: phase 1 and evaluation
    Key("tfclip.memory_cache", "", "directory for cached CLIP-Memories and stage-1 features ('' = no cache)",
        "engine.engine", "tfclip"),
    # tfclip: stage 1 of text mode (CLIP-ReID's prompt learning)
    Key("tfclip.stage1_epochs", 120, "tfclip.memory text: prompt-learning epochs (CLIP-ReID: 120 ViT, 60 RN50)",
        "engine.engine", "tfclip"),
    Key("tfclip.stage1_batch_size", 64, "tfclip.memory text: training features per prompt-learning batch",
        "engine.engine", "tfclip"),
    Key("tfclip.stage1_lr", 3.5e-4, "tfclip.memory text: Adam learning rate of the identity tokens",
        "engine.engine", "tfclip"),
    Key("tfclip.stage1_weight_decay", 1e-4, "tfclip.memory text: weight decay of the identity tokens (coupled L2)",
        "engine.engine", "tfclip"),
    Key("tfclip.stage1_min_lr", 1e-6, "tfclip.memory text: learning rate at the end of the cosine schedule",
        "engine.engine", "tfclip"),
    Key("tfclip.stage1_warmup_epochs", 5, "tfclip.memory text: linear warm-up epochs of prompt learning",
        "engine.engine", "tfclip"),
    Key("tfclip.stage1_warmup_lr", 1e-5, "tfclip.memory text: learning rate the warm-up starts from",
        "engine.engine", "tfclip"),
    Key("tfclip.protocol", "", "'' = the data type's standard: 'tfclip' for video, 'torchreid' for image data; "
        "'tfclip' (gallery = query + gallery) | 'torchreid' (query against gallery) | 'official'",
        "engine.mixins, engine.runner"),
    Key("tfclip.test_sampling", "dense", "'dense' (all frames in chunks) | 'rrs' (one clip per tracklet)",
        "engine.mixins, engine.runner"),
    Key("tfclip.select_on_test", False, "the reference's test-set best-epoch selection (not a clean protocol)",
        "engine.engine, engine.runner, engine.mixins", "tfclip"),
    Key("tfclip.all_splits", False, "iLIDS-VID / PRID2011: run the 10 splits, report mean and std", "engine.runner"),
    Key("tfclip.save_test_outputs", True, "keep features, ids and frame paths for `tfclip-reid report`",
        "engine.mixins"),
    # tfclip: multi-process training
    Key("tfclip.sync_bn", False, "BNNecks as SyncBatchNorm under torchrun (GPUs only)", "engine.engine",
        "tfclip"),
    Key("tfclip.dist_timeout", 30.0, "under torchrun: minutes a process waits for the others (group set-up, "
        "every collective) before it fails; bounds a hang when a process is stuck", "engine.runner"),
)

LEGACY_VALUES: Dict[str, Callable[[Any], Any]] = {  # key: converter of the values older configs wrote
    "tfclip.memory": memory_mode,  # True/False before the text mode -> 'clip'/'none'
}

RENAMED_KEYS = {
    "tfclip.margin": "loss.triplet.margin",
    "tfclip.label_smooth": "loss.softmax.label_smooth (True = eps 0.1)",
}


def _holder(tree: Any, dotted: str) -> Tuple[Optional[dict], str]:
    """(the node of a whole or partial config tree that holds key ``dotted``'s leaf, None when a parent is
    missing; the leaf's name)."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), leaf


def renamed_keys_in(tree: Any) -> List[str]:
    """The :data:`RENAMED_KEYS` that a whole or partial config tree (e.g. a loaded YAML file) sets."""
    found = []
    for old in RENAMED_KEYS:
        node, leaf = _holder(tree, old)
        if node is not None and node.get(leaf) is not None:
            found.append(old)
    return found


def _node_for(cfg: CN, dotted: str) -> Tuple[CN, str]:
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        if part not in node:
            node[part] = CN()
        node = node[part]
    return node, leaf


def reset_to_default(cfg: CN, key: Key) -> None:
    """Set ``key`` in ``cfg`` to its default (a list default is copied), creating missing nodes."""
    node, leaf = _node_for(cfg, key.name)
    node[leaf] = list(key.default) if isinstance(key.default, list) else key.default


def get_default_config() -> CN:
    """A fresh config with every key of :data:`KEYS` at its default."""
    cfg = CN()
    for key in KEYS:
        reset_to_default(cfg, key)
    return cfg


def legacy_value(key: str, value: Any) -> Any:
    """``value`` of config key ``key`` in today's type (:data:`LEGACY_VALUES`, e.g. ``tfclip.memory`` 'True' ->
    'clip'); other keys' values unchanged. Raises ValueError for a value the key cannot take."""
    convert = LEGACY_VALUES.get(key)
    return convert(value) if convert is not None else value


def normalise_legacy_values(cfg: CN) -> CN:
    """Convert, in place, the values of :data:`LEGACY_VALUES` keys present in ``cfg`` (a whole or partial config
    tree, e.g. a YAML file or the run config stored in an older checkpoint); returns ``cfg``."""
    for key in LEGACY_VALUES:
        node, leaf = _holder(cfg, key)
        if node is not None and leaf in node:
            node[leaf] = legacy_value(key, node[leaf])
    return cfg


def load_config_yaml(source: Union[str, IO[str]]) -> CN:
    """A config tree from YAML text or a stream (a config file, a checkpoint's stored run config), with
    :func:`normalise_legacy_values` applied: what every reader of a config YAML goes through."""
    return normalise_legacy_values(CN.load_cfg(source))


def lookup(cfg: CN, dotted: str) -> Any:
    """The value of a dotted key."""
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def is_tfclip_run(cfg: CN) -> bool:
    """True when the run's model is one of the plugin's (``tfclip_*``)."""
    return str(cfg.model.name).startswith("tfclip_")


def ineffective_keys(cfg: CN) -> List[str]:
    """Keys set away from their defaults that cannot affect this run's model family."""
    family = "tfclip" if is_tfclip_run(cfg) else "torchreid"
    return [key.name for key in KEYS
            if key.applies_to not in ("all", family) and _differs(lookup(cfg, key.name), key.default)]


def _differs(value: Any, default: Any) -> bool:
    if isinstance(default, list):
        return list(value) != default
    return value != default


def warn_ineffective_keys(cfg: CN) -> List[str]:
    """One warning naming the keys :func:`ineffective_keys` finds (none: no warning); returns them."""
    names = ineffective_keys(cfg)
    if names:
        family = "TF-CLIP (tfclip_*) models" if is_tfclip_run(cfg) else f"torchreid's model {cfg.model.name}"
        warnings.warn(f"these config keys are set but have no effect on {family}: {', '.join(names)} "
                      "(docs/config.md lists what each key applies to)", stacklevel=2)
    return names


def model_options(cfg: CN) -> ModelOptions:
    """The model options of a run config (its ``tfclip`` node's model keys)."""
    return ModelOptions.from_kwargs(**{name: cfg.tfclip[name] for name in ModelOptions.names()})


_ACTIVE: Optional[CN] = None


def set_active_config(cfg: Optional[CN]) -> None:
    """Make ``cfg`` the config that callers the plugin does not control see (torchreid's ``build_model``,
    ``FeatureExtractor``, torchreid-built dataset classes); None restores the defaults."""
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


def _datamanager_kwargs(cfg: CN) -> Dict[str, Any]:
    """The keyword arguments torchreid's video and image data managers share."""
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
    }


def videodata_kwargs(cfg: CN) -> Dict[str, Any]:
    """Keyword arguments for torchreid's ``VideoDataManager`` (as upstream ``scripts/default_config``)."""
    return {**_datamanager_kwargs(cfg), "seq_len": cfg.video.seq_len, "sample_method": cfg.video.sample_method}


def imagedata_kwargs(cfg: CN) -> Dict[str, Any]:
    """Keyword arguments for torchreid's ``ImageDataManager`` (as upstream ``scripts/default_config``; one
    augmented copy per image, no target training loader: the plugin's engines use neither)."""
    return {**_datamanager_kwargs(cfg), "cuhk03_labeled": cfg.cuhk03.labeled_images,
            "cuhk03_classic_split": cfg.cuhk03.classic_split,
            "market1501_500k": cfg.market1501.use_500k_distractors}


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
