"""The documentation: relative links and anchors resolve, the README stays a short front door whose Python
quickstart runs, docs/README.md indexes every page, and nothing cites files outside the repository."""
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", ROOT / "tests" / "data" / "README.md",
                *(ROOT / "docs").glob("*.md")])
README_MAX_LINES = 160
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*```")


def prose_lines(path: Path):
    """(line number, text) of a Markdown file outside fenced code blocks, inline code removed."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, re.sub(r"`[^`]*`", "", line)


def anchors(path: Path) -> set:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces -> '-', repeats -n)."""
    seen, result = {}, set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken_links(path: Path, root: Path = ROOT):
    """'file:line: target (why)' for each relative link of ``path`` whose file or heading anchor does not exist."""
    for number, line in prose_lines(path):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                yield f"{path.relative_to(root)}:{number}: {target} (no such file)"
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                yield f"{path.relative_to(root)}:{number}: {target} (no heading with that anchor)"


def test_the_link_checker_sees_missing_files_and_anchors(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Parameters and compute, against the paper\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#parameters-and-compute-against-the-paper) [gone](missing.md)\n"
                    "[bad anchor](other.md#nothing) [web](https://example.org/x.md)\n"
                    "```\n[in code](also-missing.md)\n```\n", encoding="utf-8")
    assert list(broken_links(page, tmp_path)) == [
        "page.md:1: missing.md (no such file)", "page.md:2: other.md#nothing (no heading with that anchor)"]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert not list(broken_links(path))


def test_readme_is_a_short_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference material to docs/"


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    missing = [page.name for page in sorted((ROOT / "docs").glob("*.md"))
               if page.name != "README.md" and f"]({page.name})" not in index]
    assert not missing, f"docs/README.md does not link {missing}"


def readme_quickstart() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    matching = [block for block in blocks if "build_from_checkpoint(" in block]
    assert len(matching) == 1, "README.md should have one Python quickstart calling build_from_checkpoint"
    return matching[0]


def test_readme_quickstart_runs_with_a_tiny_model(tmp_path):
    from tfclip_plugin.config import get_default_config, model_options
    from tfclip_plugin.files.checkpoint_file import save_checkpoint
    from tfclip_plugin.models import build_tfclip

    cfg = get_default_config()
    cfg.data.height, cfg.data.width = 64, 32
    cfg.tfclip.vision_width, cfg.tfclip.vision_layers, cfg.tfclip.embed_dim = 64, 1, 64
    trained = build_tfclip("tfclip_vit", 625, 6, height=64, width=32, **model_options(cfg).as_dict())
    checkpoint = save_checkpoint({"state_dict": trained.state_dict(), "config": cfg.dump()},
                                 str(tmp_path / "model.pth.tar-80"))
    code = readme_quickstart()
    tiny = {  # the README's full-size calls -> the same calls on a tiny tower and 64x32 frames
        'clip_weights="ViT-B-16.pt"': 'clip_weights="", vision_width=64, vision_layers=1, embed_dim=64, height=64, '
                                      'width=32',
        '"log/tfclip_vit_mars/model/model.pth.tar-80"': repr(checkpoint),
        "torch.randn(2, 8, 3, 256, 128)": "torch.randn(2, 8, 3, 64, 32)",
    }
    for full, small in tiny.items():
        assert code.count(full) == 1, f"the README quickstart no longer contains {full}: update this test"
        code = code.replace(full, small)
    namespace = {}
    exec(compile(code, "README.md quickstart", "exec"), namespace)
    model = namespace["model"]
    assert model.num_classes == 625 and model.num_cameras == 6 and not model.training
    assert namespace["features"].shape == (2, 64 + 64 + 64)  # [f_cls | f_proj | TMD] of the tiny tower
    with torch.no_grad():
        torch.testing.assert_close(namespace["features"], trained.eval()(namespace["clips"], namespace["camids"]))


def test_nothing_cites_files_outside_the_repository():
    outside = ("tfclip-reference", "clipreid-reference", "shared/docs", "torchreid-integration.md",
               "protocols-and-peers.md", "tfclip-supplement.txt")
    files = [ROOT / name for name in ("README.md", "Makefile", "setup.py")]
    for folder in ("tfclip_plugin", "tests", "benchmarks", "docs"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".yaml", ".sh", ".txt")]
    this_file = Path(__file__).resolve()
    citing = [f"{path.relative_to(ROOT)}: {name}" for path in files if path.resolve() != this_file
              for name in outside if name in path.read_text(encoding="utf-8")]
    assert not citing


@pytest.mark.parametrize("page", ["distributed.md", "troubleshooting.md"])
def test_exit_status_tables_are_the_clis(page):
    from tfclip_plugin.cli import EXIT_STATUSES

    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if re.match(r"\| (\d|128)", line)]
    assert rows == [f"| {status} | {meaning} |" for status, meaning in EXIT_STATUSES]
