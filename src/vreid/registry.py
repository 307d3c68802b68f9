"""One small registry type: maps a name to a class or function, for every pluggable kind in vreid."""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from vreid.errors import VreidError

T = TypeVar("T")


class RegistryError(VreidError, KeyError):
    """Raised when a name is unknown or registered twice; the message lists what is available."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Name -> object table with a decorator to fill it.

    >>> BACKBONES = Registry("backbone")
    >>> @BACKBONES.register("tiny")
    ... def tiny(): ...
    >>> BACKBONES.get("tiny") is tiny
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name` (default: its __name__)."""

        def add(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._items and self._items[key] is not obj:
                raise RegistryError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            self._meta[key] = dict(meta)
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} '{name}'; available: {', '.join(sorted(self._items)) or '(none)'}"
            ) from None

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
