"""Dataset problems (file, what is wrong, how to fix it) and the error that carries them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from vreid.errors import VreidError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset on disk. `line` is 1-based where the problem is in a list file."""

    file: str
    message: str
    fix: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        text = f"{where}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text


def format_problems(problems: Iterable[Problem], limit: int | None = 50) -> str:
    """One line per problem; past `limit` lines, a count of the rest."""
    problems = list(problems)
    shown = problems if limit is None else problems[:limit]
    lines = [f"- {p}" for p in shown]
    if len(problems) > len(shown):
        lines.append(f"- ... and {len(problems) - len(shown)} more problems (run `vreid data check` for all)")
    return "\n".join(lines)


class DatasetError(VreidError, ValueError):
    """A dataset on disk is broken; `problems` lists everything found, the message prints them."""

    def __init__(self, problems: Iterable[Problem], root: str = "") -> None:
        self.problems = list(problems)
        self.root = root
        head = f"dataset at {root} has {len(self.problems)} problem(s)" if root else \
            f"dataset has {len(self.problems)} problem(s)"
        super().__init__(f"{head}:\n{format_problems(self.problems)}")
