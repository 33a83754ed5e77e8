"""Errors from reading deployment policies.

    PolicyError            one problem in one document: file, line, column, field
    └── PolicyErrors       several problems found in one pass (raised by loaders)

Every error names where it is (file, line, column when known, the field path)
what was found and what was expected, so an operator can fix it without
guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FieldPath = tuple[str | int, ...]


def format_path(path: FieldPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(document)"


def kind_of(value: Any) -> str:
    """What a value is, in the words of "expected X, found Y"."""
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


@dataclass(slots=True, kw_only=True)
class Problem:
    message: str
    path: FieldPath = ()
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    warning: bool = False

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        kind = "warning" if self.warning else "error"
        field_part = f" {format_path(self.path)}:" if self.path else ""
        return f"{where}: {kind}:{field_part} {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "message": self.message,
            "field": format_path(self.path),
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": "warning" if self.warning else "error",
        }


class PolicyError(ValueError):
    """One or more problems that make a policy unusable."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(slots=True)
class Problems:
    """Collects problems while validating, so one pass reports them all."""

    items: list[Problem] = field(default_factory=list)

    def error(self, path: FieldPath, message: str) -> None:
        self.items.append(Problem(message=message, path=path))

    def warn(self, path: FieldPath, message: str) -> None:
        self.items.append(Problem(message=message, path=path, warning=True))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.warning]
