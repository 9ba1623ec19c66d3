"""One error for a bad policy, carrying every problem found, each with its place in the file.

Operators fix a policy in one pass when they see all of its problems at once, each as
`FILE:LINE:COL: key.path: message`, the form editors and CI annotate.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem. `line`/`col` count from 1; 0 means no place in the file (I/O, environment)."""

    line: int
    col: int
    path: str
    message: str

    def render(self, source: str) -> str:
        if self.line <= 0:
            return f"{source}: {self.path}: {self.message}"
        return f"{source}:{self.line}:{self.col}: {self.path}: {self.message}"


class PolicyError(Exception):
    """Every problem of one policy source; `str()` is one line per problem, in file order."""

    def __init__(self, problems: list[Problem], source: str) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.col))
        self.source = source
        super().__init__("\n".join(p.render(source) for p in self.problems))
