"""The package is layered: a module imports its own layer and lower ones only.

From the bottom: base (the top-level modules: cosa/errors.py, files.py, locks.py, outputs.py, …),
config, data, models, method, engine, reporting, cli; cosa/__main__.py, the entry point, sits on
top. No benchmark imports the command line either.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "cosa"
LAYERS = ("base", "config", "data", "models", "method", "engine", "reporting", "cli", "__main__")


def imported_modules(path: Path, package: str = "") -> set[str]:
    """Every module an ``import`` or ``from … import`` names in ``path``, also inside functions, as
    an absolute name: ``from cosa import cli`` names ``cosa.cli``; a relative import is resolved
    against ``package``, the dotted package that holds ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # Level 1 is the package itself, level 2 its parent, and so on.
            anchor = package.split(".")[: package.count(".") + 2 - node.level] if node.level else []
            module = ".".join([*anchor, *([node.module] if node.module else [])])
            if module == "cosa" or not node.module:  # the names may be modules: cosa.cli, cosa.engine.trainer
                names.update(f"{module}.{alias.name}" for alias in node.names)
            else:
                names.add(module)
    return names


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name; None outside cosa."""
    parts = module.split(".")
    if parts[0] != "cosa":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "base"


def layer_violations(source: Path) -> list[str]:
    """One line per import of a higher layer, e.g. ``cosa/models/x.py imports cosa.engine.y (engine
    is above models)``, for every module of the package at ``source``."""
    found = []
    for path in sorted(source.rglob("*.py")):
        relative = path.relative_to(source.parent)
        module = ".".join(relative.with_suffix("").parts)
        package = ".".join(relative.parent.parts)
        layer = layer_of(module)
        for name in sorted(imported_modules(path, package)):
            imported = layer_of(name)
            if imported is not None and LAYERS.index(imported) > LAYERS.index(layer):
                found.append(f"{relative.as_posix()} imports {name} ({imported} is above {layer})")
    return found


def test_the_import_parser_sees_every_form(tmp_path):
    module = tmp_path / "module.py"
    for text, expected in (
        ("import cosa.cli.main", {"cosa.cli.main"}),
        ("from cosa.cli.common import x", {"cosa.cli.common"}),
        ("from cosa import cli, errors", {"cosa.cli", "cosa.errors"}),
        ("def f():\n    from cosa.cli import train", {"cosa.cli"}),
        ("from ..cli import train", {"cosa.cli"}),
        ("from .. import cli", {"cosa.cli"}),
        ("from . import trainer", {"cosa.engine.trainer"}),
    ):
        module.write_text(text)
        assert imported_modules(module, "cosa.engine") == expected, text


def test_layers_of_module_names():
    assert [layer_of(name) for name in ("cosa", "cosa.errors", "cosa.outputs", "cosa.data.layouts")] == [
        "base",
        "base",
        "base",
        "data",
    ]
    assert [layer_of(name) for name in ("cosa.client", "cosa.cli", "cosa.__main__", "torch.nn")] == [
        "base",
        "cli",
        "__main__",
        None,
    ]


def test_a_planted_import_of_a_higher_layer_is_named(tmp_path):
    package = tmp_path / "cosa"
    for folder in ("models", "engine", "data"):
        (package / folder).mkdir(parents=True)
    (package / "errors.py").write_text("import os\n")
    (package / "outputs.py").write_text("from cosa.errors import CosaError\nfrom cosa.data.layouts import layout_of\n")
    (package / "models" / "network.py").write_text("import torch\nfrom cosa.data.io import read_mask\n")
    (package / "models" / "official.py").write_text(
        "from cosa.engine.checkpoint import read_torch_file\n"
        "from cosa.models.network import build_network\n"
        "def convert():\n    from cosa import cli\n"
    )
    (package / "engine" / "trainer.py").write_text("from . import checkpoint\nfrom ..models import official\n")
    (package / "__main__.py").write_text("from cosa.cli.main import main\n")
    assert layer_violations(package) == [
        "cosa/models/official.py imports cosa.cli (cli is above models)",
        "cosa/models/official.py imports cosa.engine.checkpoint (engine is above models)",
        "cosa/outputs.py imports cosa.data.layouts (data is above base)",
    ]


def test_every_module_imports_its_own_layer_and_lower_ones_only():
    violations = layer_violations(SOURCE)
    assert not violations, "imports of a higher layer:\n" + "\n".join(violations)


def test_no_benchmark_imports_the_command_line():
    importers = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "benchmarks").rglob("*.py"))
        if any(layer_of(name) == "cli" for name in imported_modules(path))
    ]
    assert importers == []
