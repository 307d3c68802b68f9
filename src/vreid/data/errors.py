"""Dataset problems (file, what is wrong, how to fix it) and the error that carries them."""
from __future__ import annotations

import re
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


def _worker_message(text: str) -> str:
    """The original message inside torch's "Caught DatasetError in DataLoader worker ... Traceback" text."""
    last_traceback = text.rpartition("Traceback (most recent call last):\n")[2]
    # The exception line is the first unindented line naming DatasetError after the frames.
    match = re.search(r"^[\w.]*DatasetError: (.*)", last_traceback, re.M | re.S)
    return match.group(1).rstrip() if match else text


class DatasetError(VreidError, ValueError):
    """A dataset on disk is broken; `problems` lists everything found, the message prints them.

    Built from a message string instead (as torch does when it re-raises a DataLoader worker's error),
    it keeps the original message and `problems` is empty.
    """

    def __init__(self, problems: Iterable[Problem] | str, root: str = "") -> None:
        self.root = root
        if isinstance(problems, str):
            self.problems: list[Problem] = []
            super().__init__(_worker_message(problems))
            return
        self.problems = list(problems)
        head = f"dataset at {root} has {len(self.problems)} problem(s)" if root else \
            f"dataset has {len(self.problems)} problem(s)"
        super().__init__(f"{head}:\n{format_problems(self.problems)}")

    def __reduce__(self) -> tuple:
        # Pickling (process pools) keeps the problems; the default would rebuild from the message only.
        return type(self), (self.problems or str(self), self.root)
