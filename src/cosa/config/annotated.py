"""A configuration as YAML with the comment that documents each key in schema.py (``cosa config show``).

The comments are read from schema.py's source, so the schema stays plain dataclasses whose
comments are the one documentation of the keys: a key's comment is the comment lines right
above it and the comment beside it; a section's is its own comment in the section that holds it,
else the first paragraph of its class's docstring.
"""

from __future__ import annotations

import ast
import io
import textwrap
import tokenize
from collections.abc import Iterator, Sequence
from dataclasses import fields, is_dataclass
from functools import cache
from pathlib import Path

from omegaconf import OmegaConf

from cosa.config import schema
from cosa.config.schema import Config

WIDTH = 100  # of a comment line, indentation included


@cache
def _comments_by_class() -> dict[str, dict[str, str]]:
    """For each class of schema.py, the comment of each field, and under "" its docstring's first paragraph."""
    source = Path(schema.__file__).read_text(encoding="utf-8")
    lines = source.splitlines()
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }

    def whole_line(number: int) -> bool:
        return number in comments and lines[number - 1].lstrip().startswith("#")

    found = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        docstring = (ast.get_docstring(node) or "").split("\n\n")[0]
        documented = {"": " ".join(docstring.split())}
        for item in node.body:
            if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
                continue
            above, number = [], item.lineno - 1
            while whole_line(number):
                above.insert(0, comments[number])
                number -= 1
            beside = [] if whole_line(item.end_lineno) else [comments.get(item.end_lineno, "")]
            documented[item.target.id] = " ".join(filter(None, above + beside))
        found[node.name] = documented
    return found


def _documented(section: object, prefix: str = "") -> Iterator[tuple[str, str, object]]:
    """(dotted key, comment, value) of every key and section of ``section``, in schema order."""
    comments = _comments_by_class()
    for item in fields(section):
        key, value = f"{prefix}{item.name}", getattr(section, item.name)
        comment = comments[type(section).__name__].get(item.name, "")
        if is_dataclass(value):
            yield key, comment or comments[type(value).__name__][""], value
            yield from _documented(value, f"{key}.")
        else:
            yield key, comment, value


def key_comments() -> dict[str, str]:
    """The comment that documents each key and section of the schema, by dotted name."""
    return {key: comment for key, comment, _ in _documented(Config())}


def annotated_yaml(cfg: Config, header: Sequence[str] = ()) -> str:
    """``cfg`` as a complete YAML config file, each key and section under its comment; ``header``
    lines open the file as comments."""
    lines = [f"# {line}" for line in header]
    for key, comment, value in _documented(cfg):
        *sections, name = key.split(".")
        indent = "  " * len(sections)
        if not sections and lines:
            lines.append("")
        lines += textwrap.wrap(comment, WIDTH, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")
        if is_dataclass(value):
            lines.append(f"{indent}{name}:")
        else:
            lines += [f"{indent}{line}" for line in OmegaConf.to_yaml({name: value}).splitlines()]
    return "\n".join(lines) + "\n"
