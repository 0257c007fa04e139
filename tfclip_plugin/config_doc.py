"""``docs/config.md`` generated from :data:`tfclip_plugin.config.KEYS` and the shipped recipes.

``python -m tfclip_plugin.config_doc`` rewrites the page; ``--check`` exits with status 1 when the page in the
repository differs from what the table says (a test runs the same comparison).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

from yacs.config import CfgNode as CN

from .config import KEYS, lookup
from .configs import recipe_names, recipe_path
from .files.atomic import write_text

DOC_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "config.md")
APPLIES_TO_WORDS = {
    "all": "all runs",
    "tfclip": "tfclip_* models",
    "torchreid": "torchreid models",
    "torchreid-compat": "none (torchreid-compat)",
}


def _format(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


def _recipe_values() -> Dict[str, Dict[str, str]]:
    """{recipe name: {dotted key: value}} for the keys each shipped recipe sets."""
    values = {}
    for name in recipe_names():
        with open(recipe_path(name), encoding="utf-8") as stream:
            loaded = CN.load_cfg(stream)
        values[name] = {}
        for key in KEYS:
            try:
                values[name][key.name] = _format(lookup(loaded, key.name))
            except KeyError:
                continue
    return values


def render_config_doc() -> str:
    """The Markdown page: per top-level node, one row per key (default, what it applies to, the modules that read
    it, its meaning, the recipes that set it); then, per shipped recipe, every key it sets and the value."""
    recipes = _recipe_values()
    lines: List[str] = [
        "# Configuration keys",
        "",
        "Generated from `tfclip_plugin/config.py` (`KEYS`) and the shipped recipes in `configs/` by",
        "`python -m tfclip_plugin.config_doc`; do not edit by hand (a test fails when this page is out of date).",
        "",
        "Set keys in a YAML file (`--config-file`) or as `KEY VALUE` pairs after the command line. *Applies to*",
        "says which runs a key can affect: a run that sets a key away from its default where it cannot have an",
        "effect gets one warning naming it. *torchreid-compat* keys only keep torchreid's configs and command",
        "lines loading. The values each shipped recipe sets are listed [per recipe](#recipes) below the keys.",
    ]
    node: Optional[str] = None
    for key in KEYS:
        top = key.name.split(".")[0] if "." in key.name else "(top level)"
        if top != node:
            node = top
            lines += ["", f"## `{node}`", "", "| key | default | applies to | read by | meaning | set by recipes |",
                      "|---|---|---|---|---|---|"]
        setters = ", ".join(f"`{name}`" for name, values in recipes.items() if key.name in values)
        cells = [f"`{key.name}`", f"`{_format(key.default)}`", APPLIES_TO_WORDS[key.applies_to], key.read_by,
                 key.help.replace("|", "\\|"), setters]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Recipes", "",
              "Every key a shipped recipe sets, with its value (`--config-file NAME`; the files are in `configs/`)."]
    for name, values in recipes.items():
        lines += ["", f"### `{name}`", ""]
        lines += [f"- `{key}`: `{value}`" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfclip_plugin.config_doc",
                                     description="Write (or --check) docs/config.md from the config key table.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is out of date, write nothing")
    parser.add_argument("--path", default=DOC_PATH, help=f"the page (default {DOC_PATH})")
    args = parser.parse_args(argv)
    page = render_config_doc()
    if args.check:
        current = open(args.path, encoding="utf-8").read() if os.path.isfile(args.path) else ""
        if current != page:
            print(f"{args.path} is out of date: run python -m tfclip_plugin.config_doc", file=sys.stderr)
            return 1
        return 0
    print(write_text(args.path, page))
    return 0


if __name__ == "__main__":
    sys.exit(main())
