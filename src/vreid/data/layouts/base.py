"""What every layout parser shares: the parse context that collects problems, list-file reading, the base class."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from vreid.data.errors import DatasetError, Problem
from vreid.data.records import ImageRecord, ReidDataset

SPLITS = ("train", "query", "gallery")


class ParseContext:
    """State of one parse: the dataset root, problems found so far, and where each image was listed.

    Parsers never raise on a broken tree; they record a Problem and go on, so that `vreid data check`
    can list everything at once. `sources` maps an image's absolute path to (list file, line number).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().absolute()
        self.problems: list[Problem] = []
        self.sources: dict[str, tuple[str, int | None]] = {}

    def problem(self, file: str, message: str, fix: str = "", line: int | None = None) -> None:
        self.problems.append(Problem(file=file, message=message, fix=fix, line=line))

    def path(self, rel: str) -> Path:
        return self.root / rel

    def image(self, rel: str, listed_in: str, line: int | None = None) -> str:
        """Absolute path of an image given relative to the root (or absolute); remembers where it was listed."""
        p = Path(rel)
        path = str(p if p.is_absolute() else self.root / p)
        self.sources.setdefault(path, (listed_in, line))
        return path

    def lines(self, rel: str, required: bool = True, what: str = "list file") -> Iterator[tuple[int, str]] | None:
        """(line number, stripped text) of the non-blank lines of a text file, or None if it is missing."""
        p = self.path(rel)
        if not p.is_file():
            if required:
                self.problem(rel, f"missing {what}", f"put {rel} under {self.root} (see docs/datasets.md)")
            return None
        try:
            text = p.read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            self.problem(rel, f"cannot read {what}: {e.strerror or e}", "check the file's permissions")
            return None
        return ((i, s.strip()) for i, s in enumerate(text.splitlines(), start=1) if s.strip())


class Layout:
    """A dataset layout on disk. Subclasses implement `parse`; `load` adds the side file and raises on problems."""

    name: str = ""
    protocol: str = ""
    #: splits that must not be empty for the dataset to be usable
    required_splits: tuple[str, ...] = SPLITS
    #: whether the side label file may set the camera id (layouts without cameras of their own)
    side_sets_camera: bool = False

    def parse(self, ctx: ParseContext, test_size: int | None) -> ReidDataset:  # pragma: no cover - abstract
        raise NotImplementedError

    def list_file(self, split: str, test_size: int | None) -> str:
        """The file that lists `split`'s images (for messages)."""
        return f"{split} list"

    def parse_root(self, root: str | os.PathLike, test_size: int | None = None) -> tuple[ReidDataset, ParseContext]:
        """Parse without raising: the dataset (possibly partial) and the context holding the problems."""
        from vreid.data.layouts.side_labels import apply_side_labels

        ctx = ParseContext(root)
        if not ctx.root.is_dir():
            ctx.problem(str(ctx.root), "dataset root is not a folder", "set data.root to the folder that holds "
                        f"the {self.name} files")
            return self.empty(ctx, test_size), ctx
        ds = self.parse(ctx, test_size)
        apply_side_labels(ds, ctx, set_camera=self.side_sets_camera)
        return ds, ctx

    def load(self, root: str | os.PathLike, test_size: int | None = None) -> ReidDataset:
        """Parse the tree at `root`; raise DatasetError listing every problem found while parsing."""
        ds, ctx = self.parse_root(root, test_size)
        if ctx.problems:
            raise DatasetError(ctx.problems, str(ctx.root))
        return ds

    def empty(self, ctx: ParseContext, test_size: int | None) -> ReidDataset:
        return self.dataset(ctx, [], [], [], test_size)

    def dataset(self, ctx: ParseContext, train: list[ImageRecord], query: list[ImageRecord],
                gallery: list[ImageRecord], test_size: int | None, **info) -> ReidDataset:
        return ReidDataset(name=self.name, root=str(ctx.root), train=train, query=query, gallery=gallery,
                           protocol=self.protocol, info={"layout": self.name, "test_size": test_size, **info})


def parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
