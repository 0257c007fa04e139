"""What a training run records in its folder so that it can be continued: ``config.yaml`` and ``interrupted.json``.

- ``<save_dir>/config.yaml``: the run's yacs config as YAML (the engine writes it with ``model.resume auto``), read
  back by ``tfclip-reid --config-file``.
- ``<save_dir>/interrupted.json``: written when a signal stopped the run (``signal``, ``exit_code``, ``phase``,
  ``epoch``, ``iteration``, ``iterations``, ``checkpoint``, ``checkpoint_epoch``, ``resume_command``, ``message``,
  ``time``), removed when a later run of the folder finishes; for batch scripts.

Both are written atomically (``files.atomic``).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

from .atomic import write_text
from .results import read_json_object

RUN_CONFIG = "config.yaml"
INTERRUPTED = "interrupted.json"


def run_config_path(save_dir: str) -> str:
    """``<save_dir>/config.yaml``."""
    return os.path.join(save_dir, RUN_CONFIG)


def write_run_config(save_dir: str, config_yaml: str) -> str:
    """Write ``config_yaml`` (a yacs ``dump()``) to ``<save_dir>/config.yaml``; returns the path."""
    return write_text(run_config_path(save_dir), config_yaml)


def interrupted_path(save_dir: str) -> str:
    """``<save_dir>/interrupted.json``."""
    return os.path.join(save_dir, INTERRUPTED)


def write_interrupted(save_dir: str, record: Dict[str, Any]) -> str:
    """Write ``record`` and the current time to ``<save_dir>/interrupted.json``; returns the path."""
    record = dict(record, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return write_text(interrupted_path(save_dir), json.dumps(record, indent=2))


def load_interrupted(save_dir: str) -> Dict[str, Any]:
    """``<save_dir>/interrupted.json`` as a dict (empty when the folder has none)."""
    return read_json_object(interrupted_path(save_dir))


def remove_interrupted(save_dir: str) -> None:
    """Remove ``<save_dir>/interrupted.json`` if a stopped run left one."""
    path = interrupted_path(save_dir)
    if os.path.isfile(path):
        os.remove(path)
