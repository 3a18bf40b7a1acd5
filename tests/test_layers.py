"""The command line sits on top: nothing below it, and no benchmark, imports ``cosa.cli``."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "cosa"


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from … import`` names in ``path``, also inside functions; for
    ``from cosa import cli`` both ``cosa`` and ``cosa.cli``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imports_cli(path: Path) -> bool:
    return any(name == "cosa.cli" or name.startswith("cosa.cli.") for name in imported_modules(path))


def cli_importers(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(ROOT)) for path in paths if imports_cli(path)]


def test_the_import_parser_sees_every_form(tmp_path):
    module = tmp_path / "module.py"
    for text in (
        "import cosa.cli.main",
        "from cosa.cli.common import x",
        "from cosa import cli",
        "def f():\n    from cosa.cli import train",
    ):
        module.write_text(text)
        assert imports_cli(module), text
    module.write_text("import cosa.client\nfrom cosa import clinic")
    assert not imports_cli(module)


def test_no_module_below_the_command_line_imports_it():
    below = [
        path for path in SOURCE.rglob("*.py") if SOURCE / "cli" not in path.parents and path != SOURCE / "__main__.py"
    ]
    assert below and cli_importers(below) == []


def test_no_benchmark_imports_the_command_line():
    assert cli_importers(sorted((ROOT / "benchmarks").rglob("*.py"))) == []
