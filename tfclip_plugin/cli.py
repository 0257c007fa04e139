"""``tfclip-reid``: torchreid ``scripts/main.py`` conventions plus the plugin's subcommands.

    tfclip-reid [--config-file F] [-s SRC ...] [-t TGT ...] [--transforms T ...] [--root DIR]
                [--model NAME] [KEY VALUE ...]          train (or test with ``test.evaluate True``)
    tfclip-reid demo [--root DIR] [--save-dir DIR]       synthetic benchmark, untrained vs trained vs baseline
    tfclip-reid complexity [--config-file F] [KEY VALUE ...]   parameter counts and GMACs per frame (JSON)
    tfclip-reid report RUN_DIR [RUN_DIR ...] [--topk 5] [--queries N]   figures and index.html of runs
    tfclip-reid download-weights NAME [--cache-dir DIR]   OpenAI CLIP archives (ViT-B-16, RN50), verified
    tfclip-reid paper list | run TABLE ROW --root DIR | compare [LOG_DIR]   the supplement's Tables 1-7
    tfclip-reid check-data -s NAME --root DIR           decode every frame of a dataset, list unreadable ones

Exit statuses of a train/test run (:data:`EXIT_STATUSES`; docs/troubleshooting.md): 0 done; 1 failed (a file
that could not be written, an evaluation that failed after training, any other error); 2 a config error;
128 + N stopped by signal N at a safe point (143 SIGTERM, 130 SIGINT), resumable with ``model.resume auto``.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from typing import List, Optional, Sequence, Tuple

from yacs.config import CfgNode as CN

from .config import (RENAMED_KEYS, get_default_config, legacy_value, load_config_yaml, lookup, model_options,
                     renamed_keys_in)
from .configs import recipe_names, recipe_path

SUBCOMMANDS = ("demo", "complexity", "report", "download-weights", "paper", "check-data")
EXIT_DONE, EXIT_FAILED, EXIT_CONFIG_ERROR = 0, 1, 2
EXIT_STATUSES = (  # (status, meaning): the table of docs/distributed.md and docs/troubleshooting.md
    ("0", "done"),
    ("1", "failed: a file could not be written, the evaluation after training failed, or another error"),
    ("2", "config error: a config file, option, dataset or model name"),
    ("128 + N", "stopped by signal N at a safe point (143 SIGTERM, 130 SIGINT); resumable with `model.resume auto`"),
)
_SINGLE_VALUE_FLAGS = ("--config-file", "--root", "--model", "--save-dir", "--dataset", "--log-dir", "--table")
_MULTI_VALUE_FLAGS = ("-s", "--sources", "-t", "--targets", "--transforms")

EPILOG = """\
trailing options:
  KEY VALUE pairs override any config key, e.g. `train.max_epoch 2 tfclip.precision bf16`.
  They may follow a multi-value flag directly: `-t mars train.max_epoch 2` reads `train.max_epoch 2`
  as an option, not as dataset names. `model.name NAME` is the same as `--model NAME`.

subcommands:
  demo        build the synthetic benchmark if missing, train a small TF-CLIP (both phases) and a
              torchreid baseline, evaluate all three under one protocol, print the table and a JSON line
  complexity  print one JSON object: parameter counts per module and the backbone's GMACs per frame
  report      write figures (ranked tracklets, CMC curves, feature map, training curves) and an
              index.html into RUN_DIR/report/ (several runs: one CMC plot comparing them)
  download-weights
              download OpenAI's CLIP archive NAME (ViT-B-16 or RN50) into the cache, check its sha256
              and print its path (pass it as tfclip.clip_weights)
  paper       the supplement's Tables 1-7: `paper list` (rows, options, the paper's numbers, our parameter
              counts), `paper run TABLE ROW --root DIR` (train and test a row into log/paper/), `paper compare`
              (the paper's numbers beside ours); docs/reproducing.md
  check-data  decode every frame of the datasets given with -s, in parallel, and list the unreadable ones
              (exit status 1 when there are any)

examples:
  tfclip-reid --config-file configs/tfclip_vit_mars.yaml --root /data tfclip.clip_weights ViT-B-16.pt
  tfclip-reid --config-file tfclip_vit_mars --root /data     (a shipped recipe by name)
  tfclip-reid -s synthvid -t synthvid --root /data --model osnet_x0_25 train.max_epoch 1
  tfclip-reid --config-file tfclip_vit_clipm_market1501 --root /data tfclip.clip_weights ViT-B-16.pt   (image ReID)
  tfclip-reid -s synthimg -t synthimg --root /data data.type image train.max_epoch 2
  tfclip-reid --config-file configs/tfclip_vit_mars.yaml --root /data test.evaluate True model.load_weights ckpt.pth.tar
"""


class ConfigError(ValueError):
    """A config file or KEY VALUE option that does not fit the defaults."""


def build_main_parser() -> argparse.ArgumentParser:
    """The parser of the train/test command (torchreid ``scripts/main.py`` flags plus ``--model``)."""
    parser = argparse.ArgumentParser(
        prog="tfclip-reid",
        description="Train and evaluate TF-CLIP (or any torchreid model) on video or image ReID benchmarks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", type=str, default="",
                        help="YAML config (e.g. configs/tfclip_vit_mars.yaml), or a shipped recipe's name")
    parser.add_argument("-s", "--sources", type=str, nargs="+", help="training datasets (data.sources)")
    parser.add_argument("-t", "--targets", type=str, nargs="+", help="test datasets (data.targets)")
    parser.add_argument("--transforms", type=str, nargs="+", help="train augmentations (data.transforms)")
    parser.add_argument("--root", type=str, default="", help="folder holding the datasets (data.root)")
    parser.add_argument("--model", type=str, default="", help="model name: tfclip_vit, tfclip_rn50 or any torchreid model")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def build_subcommand_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one subcommand."""
    parser = argparse.ArgumentParser(prog=f"tfclip-reid {name}")
    if name == "demo":
        parser.description = "Synthetic benchmark: untrained vs trained TF-CLIP vs a torchreid baseline."
        parser.add_argument("--root", type=str, default="reid-data", help="where the synthetic benchmark lives")
        parser.add_argument("--save-dir", type=str, default="log/demo", help="run folder")
    elif name == "complexity":
        parser.description = "Parameter counts per module and the backbone's GMACs per frame, as JSON."
        parser.add_argument("--config-file", type=str, default="")
        parser.add_argument("--model", type=str, default="")
        parser.add_argument("--num-classes", type=int, default=625, help="training identities (MARS: 625)")
        parser.add_argument("--num-cameras", type=int, default=6, help="SIE rows (MARS: 6)")
        parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    elif name == "report":
        parser.description = "Figures and index.html for one or more run folders."
        parser.add_argument("runs", nargs="+", help="run folders (data.save_dir of test runs)")
        parser.add_argument("--topk", type=int, default=5, help="gallery tracklets per ranked row")
        parser.add_argument("--queries", type=int, default=8, help="queries shown in the ranked-results figure")
        parser.add_argument("--seed", type=int, default=0, help="seed for the choice of queries and identities")
    elif name == "paper":
        parser.description = "The supplement's Tables 1-7: list the rows, run one, compare the results with the paper."
        commands = parser.add_subparsers(dest="command", required=True)
        listing = commands.add_parser("list", help="one JSON object per row (KEY VALUE options change the size)")
        listing.add_argument("--table", type=str, default="", help="only this table (1-7)")
        listing.add_argument("--no-ours", action="store_true", help="skip building the models (faster)")
        run = commands.add_parser("run", help="train and test a row into LOG_DIR/table<T>/<row>_<dataset>/")
        run.add_argument("table", help="1-7")
        run.add_argument("row", help="the row's name, e.g. A2, B6, conv1d, B4-wo-clip-m")
        run.add_argument("--root", type=str, required=True, help="folder holding the datasets (data.root)")
        run.add_argument("--dataset", type=str, default="", help="for rows reported on two datasets (Tables 2, 4)")
        run.add_argument("--log-dir", type=str, default=os.path.join("log", "paper"))
        comparing = commands.add_parser("compare", help="the paper's numbers beside ours (Markdown, then JSON lines)")
        comparing.add_argument("log_dir", nargs="?", default=os.path.join("log", "paper"))
    elif name == "check-data":
        parser.description = "Decode every frame of the datasets in parallel and list the unreadable ones."
        parser.add_argument("-s", "--sources", type=str, nargs="+", required=True, help="video datasets")
        parser.add_argument("--root", type=str, default="reid-data", help="folder holding the datasets")
        parser.add_argument("--workers", type=int, default=0, help="decoding processes (0: one per CPU core)")
        parser.add_argument("--split-id", type=int, default=0, help="split of iLIDS-VID / PRID2011")
    elif name == "download-weights":
        from .download import KNOWN_FILES

        parser.description = "Download a CLIP weights archive into the cache, verified against its sha256."
        parser.add_argument("name", choices=sorted(KNOWN_FILES), help="which archive")
        parser.add_argument("--cache-dir", type=str, default=None,
                            help="where to keep it (default $TFCLIP_CACHE or ~/.cache/tfclip_plugin)")
    return parser


def _is_config_key(token: str, cfg: CN) -> bool:
    node = cfg
    for part in token.split("."):
        if not isinstance(node, CN) or part not in node:
            return False
        node = node[part]
    return "." in token


def split_options(argv: Sequence[str], cfg: Optional[CN] = None) -> Tuple[List[str], List[str]]:
    """Split argv into (flags, KEY VALUE options).

    The options start at the first token that names a config key and is not the value of a
    single-value flag, so ``-t mars train.max_epoch 2`` gives targets ``['mars']``. A literal ``--``
    also ends the flags and is dropped.
    """
    cfg = cfg if cfg is not None else get_default_config()
    argv = list(argv)
    for i, token in enumerate(argv):
        if token == "--":
            return argv[:i], argv[i + 1 :]
        previous = argv[i - 1] if i else ""
        if previous in _SINGLE_VALUE_FLAGS:
            continue
        if _is_config_key(token, cfg):
            return argv[:i], argv[i:]
    return argv, []


def merge_options(cfg: CN, opts: Sequence[str]) -> None:
    """Apply KEY VALUE pairs with errors that name the key and what was expected."""
    if len(opts) % 2:
        raise ConfigError(f"options must be KEY VALUE pairs; got an odd number of tokens: {' '.join(opts)}")
    for key, value in zip(opts[0::2], opts[1::2]):
        if key in RENAMED_KEYS:
            raise ConfigError(f"config key '{key}' was replaced by {RENAMED_KEYS[key]}")
        if not _is_config_key(key, cfg):
            known = _all_keys(cfg)
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint} (see `tfclip-reid --help` and tfclip_plugin/config.py)")
        try:
            cfg.merge_from_list([key, legacy_value(key, value)])
        except (ValueError, AssertionError) as exc:
            expected = type(lookup(cfg, key)).__name__
            raise ConfigError(f"config key '{key}' expects a value of type {expected}; got {value!r} ({exc})") from None


def resolve_config_file(path: str) -> str:
    """``path`` itself when it exists, else the shipped recipe of that name (``tfclip_vit_mars``)."""
    if os.path.isfile(path):
        return path
    try:
        return recipe_path(path)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} (shipped recipes: {', '.join(recipe_names())})") from None


def merge_config_file(cfg: CN, path: str) -> None:
    """Merge a YAML file (a path or a shipped recipe's name), naming the file and key when something does not
    fit; values older files wrote in another type are read as today's (``config.load_config_yaml``)."""
    path = resolve_config_file(path)
    try:
        with open(path, encoding="utf-8") as stream:
            loaded = load_config_yaml(stream)
        cfg.merge_from_other_cfg(loaded)
    except KeyError as exc:
        renamed = renamed_keys_in(loaded)
        if renamed:
            raise ConfigError(f"{path}: config key '{renamed[0]}' was replaced by {RENAMED_KEYS[renamed[0]]}") from None
        raise ConfigError(f"{path}: unknown config key {exc}") from None
    except (ValueError, AssertionError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _all_keys(cfg: CN, prefix: str = "") -> List[str]:
    keys = []
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        keys.extend(_all_keys(v, name + ".") if isinstance(v, CN) else [name])
    return keys


def config_from_args(argv: Sequence[str]) -> CN:
    """The run config: defaults <- config file <- flags <- KEY VALUE options (torchreid's order)."""
    cfg = get_default_config()
    flags, opts = split_options(argv, cfg)
    args = build_main_parser().parse_args(flags)
    import torch

    cfg.use_gpu = torch.cuda.is_available()
    if args.config_file:
        merge_config_file(cfg, args.config_file)
    if args.sources:
        cfg.data.sources = args.sources
    if args.targets:
        cfg.data.targets = args.targets
    if args.transforms:
        cfg.data.transforms = args.transforms
    if args.root:
        cfg.data.root = args.root
    if args.model:
        cfg.model.name = args.model
    merge_options(cfg, list(args.opts) + list(opts))
    return cfg


def check_names(cfg: CN) -> None:
    """Fail early, listing what exists, when a dataset or model name is unknown."""
    from . import host

    registries = {"video": host.video_dataset_registry, "image": host.image_dataset_registry}
    if cfg.data.type not in registries:
        raise ConfigError(f"data.type must be one of {', '.join(registries)}; got {cfg.data.type!r}")
    datasets = registries[cfg.data.type]()
    for name in list(cfg.data.sources) + list(cfg.data.targets):
        if name not in datasets:
            other = "image" if cfg.data.type == "video" else "video"
            article = "an" if other == "image" else "a"
            hint = f" ('{name}' is {article} {other} dataset: set data.type {other})" \
                if name in registries[other]() else ""
            raise ConfigError(f"unknown {cfg.data.type} dataset '{name}'{hint}; available: "
                              f"{', '.join(sorted(datasets))}")
    models = host.model_factory()
    if cfg.model.name not in models:
        close = difflib.get_close_matches(cfg.model.name, list(models), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown model '{cfg.model.name}'{hint}; available: {', '.join(sorted(models))}")


def _complexity(argv: Sequence[str]) -> dict:
    args = build_subcommand_parser("complexity").parse_args(argv)
    cfg = get_default_config()
    if args.config_file:
        merge_config_file(cfg, args.config_file)
    if args.model:
        cfg.model.name = args.model
    merge_options(cfg, args.opts)
    from .models import build_tfclip, model_complexity

    model = build_tfclip(
        cfg.model.name, num_classes=args.num_classes, num_cameras=args.num_cameras, pretrained=False,
        height=cfg.data.height, width=cfg.data.width, **model_options(cfg).as_dict(),
    )
    return model_complexity(model, height=cfg.data.height, width=cfg.data.width)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``tfclip-reid`` and ``python -m tfclip_plugin``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return _run_subcommand(argv[0], argv[1:])
        if argv and argv[0] in ("-h", "--help"):
            build_main_parser().print_help()
            return 0
        cfg = config_from_args(argv)
        check_names(cfg)
        return train_or_test(cfg)
    except ConfigError as exc:
        print(f"tfclip-reid: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


def train_or_test(cfg: CN) -> int:
    """``run_experiment(cfg)`` and its exit status: a stopped run 128 + the signal (ranks other than 0 say where
    they stopped on stderr; rank 0 has printed the resume command), a failed write or evaluation 1 with its
    message (which says what is kept and the command that continues)."""
    from .engine.recovery import EvaluationFailedError
    from .engine.runner import run_experiment
    from .files.atomic import WriteFailedError
    from .stopping import TrainingStopped

    try:
        run_experiment(cfg)
    except TrainingStopped as stopped:
        rank = os.environ.get("RANK", "0")
        if rank != "0":
            print(f"tfclip-reid (rank {rank}): {stopped}", file=sys.stderr)
        return stopped.exit_code
    except (WriteFailedError, EvaluationFailedError) as exc:
        print(f"tfclip-reid: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_DONE


def _paper(argv: Sequence[str]) -> int:
    flags, opts = split_options(argv)
    args = build_subcommand_parser("paper").parse_args(flags)
    from .paper import PaperError, compare, list_rows, run_row

    try:
        if args.command == "list":
            for entry in list_rows(args.table, compute=not args.no_ours, overrides=opts):
                print(json.dumps(entry))
        elif args.command == "run":
            run_row(args.table, args.row, args.root, args.dataset, opts, args.log_dir)
        else:
            table, entries = compare(args.log_dir)
            print(table + "\n")
            for entry in entries:
                print(json.dumps(entry))
    except PaperError as exc:
        raise ConfigError(str(exc)) from None
    return 0


def _check_data(argv: Sequence[str]) -> int:
    args = build_subcommand_parser("check-data").parse_args(argv)
    from .data.integrity import check_dataset_frames

    try:
        unreadable = check_dataset_frames(args.sources, args.root, workers=args.workers, split_id=args.split_id)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return 1 if unreadable else 0


def _run_subcommand(name: str, argv: Sequence[str]) -> int:
    if name == "paper":
        return _paper(argv)
    if name == "check-data":
        return _check_data(argv)
    if name == "complexity":
        print(json.dumps(_complexity(argv)))
        return 0
    if name == "download-weights":
        args = build_subcommand_parser(name).parse_args(argv)
        from .download import DownloadError, fetch_known

        try:
            print(fetch_known(args.name, cache_dir=args.cache_dir))
        except DownloadError as exc:
            print(f"tfclip-reid download-weights: error: {exc}", file=sys.stderr)
            return 1
        return 0
    if name == "demo":
        args = build_subcommand_parser("demo").parse_args(argv)
        from .engine.demo import run_demo

        run_demo(root=args.root, save_dir=args.save_dir)
        return 0
    args = build_subcommand_parser("report").parse_args(argv)
    from .report import build_report

    for path in build_report(args.runs, topk=args.topk, num_queries=args.queries, seed=args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
