"""The docs stand on their own: they name tests that exist, where they are (docs/reliability.md pins
every case to a test), and no section of a document outside the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def defined_tests() -> dict[str, set[str]]:
    """Test name → the files (relative to tests/) that define it."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        for name in re.findall(r"^\s*def (test_\w+)", path.read_text(encoding="utf-8"), re.MULTILINE):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT / "tests")))
    return found


def misplaced_tests(text: str, definitions: dict[str, set[str]]) -> list[str]:
    """Every test the text names (``file.py::test_x``, or ``test_x`` under a heading that names
    ``(tests/FILE.py)``) that is not defined in that file."""
    problems, section_file = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            heading = re.search(r"\(tests/([\w/]+\.py)\)", line)
            section_file = heading.group(1) if heading else None
        for file, name in re.findall(r"`(?:([\w/]+\.py)::)?(test_\w+)(?![\w.])", line):
            where = file or section_file
            if name not in definitions or (where and where not in definitions[name]):
                problems.append(f"line {number}: {name} is not in {where or 'any test file'}")
    return problems


def test_every_test_reliability_md_names_exists_where_it_says():
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert misplaced_tests(text, defined_tests()) == []


def test_a_missing_or_moved_test_is_found():
    definitions = {"test_a": {"engine/test_x.py"}}
    text = (
        "## Faults (tests/engine/test_y.py)\n"
        "| case | `test_a` | `engine/test_x.py::test_a` | `test_gone` | `engine/test_x.py` |"
    )
    assert misplaced_tests(text, definitions) == [
        "line 2: test_a is not in engine/test_y.py",
        "line 2: test_gone is not in engine/test_y.py",
    ]


def test_no_reference_to_a_section_of_a_document_outside_the_repository():
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    texts += [*(ROOT / "src").rglob("*.py"), *(ROOT / "src").rglob("*.yaml"), *(ROOT / "benchmarks").glob("*.py")]
    assert [str(path.relative_to(ROOT)) for path in texts if "§" in path.read_text(encoding="utf-8")] == []
