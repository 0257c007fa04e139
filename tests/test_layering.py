"""The import layering of the package: models know nothing of configs, engines, the CLI or torchreid glue."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tfclip_plugin"
FORBIDDEN_FOR_MODELS = ("config", "interop", "engine", "cli", "report", "distributed", "registry", "host")


def imported_modules(path: Path):
    """Every module a file imports, at module level or inside functions, as absolute dotted names."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def test_the_import_parser_sees_relative_and_function_level_imports(tmp_path):
    source = PACKAGE / "models" / "tfclip.py"
    modules = set(imported_modules(source))
    assert {"tfclip_plugin.models.options", "tfclip_plugin.models.backbone", "torch"} <= modules
    probe = PACKAGE / "models" / "_layering_probe.py"
    try:
        probe.write_text("def f():\n    from ..config import active_config\n    from .. import interop\n")
        assert {"tfclip_plugin.config", "tfclip_plugin.interop"} <= set(imported_modules(probe))
    finally:
        probe.unlink()


@pytest.mark.parametrize("path", sorted((PACKAGE / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_import_no_host_facing_module(path):
    offending = sorted(module for module in imported_modules(path)
                       if any(module == f"tfclip_plugin.{name}" or module.startswith(f"tfclip_plugin.{name}.")
                              for name in FORBIDDEN_FOR_MODELS))
    assert not offending, f"{path.name} imports {offending}"


def test_only_host_imports_torchreid():
    def imports_torchreid(path: Path) -> bool:
        text = path.read_text(encoding="utf-8")
        return 'import_module("torchreid' in text or any(
            module == "torchreid" or module.startswith("torchreid.") for module in imported_modules(path))

    assert sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.glob("**/*.py") if imports_torchreid(p)) == ["host.py"]
