"""Transient progress bars with ETA on stderr for long loops; nothing at all for pipes, logs, tests, DDP
workers, quick work, or with VREID_PROGRESS=0."""
from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

#: A loop gets a bar only once it has run this long (quick loops stay silent).
SHOW_AFTER_S = 0.5

#: A step without a loop (`working`) gets a line only from this many rows up (below, it takes about a second).
MIN_STEP_SIZE = 2000

#: Set VREID_PROGRESS=0 to turn every bar off.
SWITCH = "VREID_PROGRESS"

#: The bar shown now, if any: nested loops add their line to it (rich allows one live display at a time).
_live: dict = {"progress": None, "users": 0}


def _worker_rank() -> bool:
    """True on a DDP rank other than 0. Looks torch up without importing it: no torch, no process group."""
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None)
    return bool(dist is not None and dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def bars_enabled() -> bool:
    """Whether bars may be drawn here: stderr is a terminal, the switch is on, and this is the main rank."""
    on_terminal = getattr(sys.stderr, "isatty", lambda: False)()   # stderr may be None (pythonw) or a pipe
    return os.environ.get(SWITCH, "1") != "0" and on_terminal and not _worker_rank()


@contextmanager
def _task(description: str, total: float | None, completed: float = 0) -> Iterator[Callable[[float], None]]:
    """A line in the shared bar (opened on first use, closed with its last line); yields `advance(n)`."""
    from rich.console import Console
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    if _live["progress"] is None:
        # stdout is left alone: results printed meanwhile must still go to stdout
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=True, redirect_stdout=False)
        progress.start()
        _live["progress"] = progress
    progress = _live["progress"]
    _live["users"] += 1
    task = progress.add_task(description, total=total, completed=completed)
    progress.refresh()  # show the new line now, not at the next 10 Hz refresh
    try:
        yield lambda n: progress.advance(task, n)
    finally:
        progress.remove_task(task)
        _live["users"] -= 1
        if _live["users"] == 0:
            progress.stop()
            _live["progress"] = None


def track(iterable: Iterable[T], description: str, total: float | None = None,
          units: Callable[[T], float] | None = None) -> Iterator[T]:
    """Yield every item of `iterable` unchanged, with a bar once the loop has run SHOW_AFTER_S seconds.

    `total` defaults to len(iterable); `units(item)` is how much of it an item is (default 1), e.g. the rows
    of a (start, stop) block.
    """
    if not bars_enabled():
        yield from iterable
        return
    if total is None:
        total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    done, started = 0.0, time.monotonic()
    with ExitStack() as stack:
        advance = None
        for item in iterable:
            yield item
            step = units(item) if units is not None else 1
            done += step
            if advance is not None:
                advance(step)
            elif time.monotonic() - started >= SHOW_AFTER_S:
                advance = stack.enter_context(_task(description, total, completed=done))


def block_rows(block: tuple[int, int]) -> int:
    """`units` of a (start, stop) block from vreid.eval.distance.iter_blocks: its rows."""
    return block[1] - block[0]


@contextmanager
def working(description: str, size: int) -> Iterator[None]:
    """An elapsed-time line for one long step that has no loop to count (e.g. clustering `size` rows);
    nothing below MIN_STEP_SIZE rows."""
    if size < MIN_STEP_SIZE or not bars_enabled():
        yield
        return
    with _task(description, total=None):
        yield
