"""The release recipes and the demo setting as YAML files, shipped with the package (``configs/`` at the
repository root points here)."""
from __future__ import annotations

import os
from typing import List

FOLDER = os.path.dirname(os.path.abspath(__file__))


def recipe_names() -> List[str]:
    """The shipped recipes, without the ``.yaml`` extension."""
    return sorted(name[: -len(".yaml")] for name in os.listdir(FOLDER) if name.endswith(".yaml"))


def recipe_path(name: str) -> str:
    """The path of a shipped recipe (``'tfclip_vit_mars'`` or ``'tfclip_vit_mars.yaml'``); ``FileNotFoundError``
    listing the shipped ones otherwise."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    path = os.path.join(FOLDER, f"{stem}.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no shipped recipe named {name!r}; shipped: {', '.join(recipe_names())}")
    return path
