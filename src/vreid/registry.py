"""One small registry type: maps a name to a class or function, for every pluggable kind in vreid."""
from __future__ import annotations

import importlib
import pkgutil
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

    `plugins` names a package whose public modules register themselves: they are imported on the first lookup,
    so the module holding the registry need not import the plug-ins that depend on it.
    """

    def __init__(self, kind: str, plugins: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._plugins = plugins

    def _load_plugins(self) -> None:
        """Import every public module of the plug-in package, once."""
        if self._plugins is None:
            return
        package, self._plugins = self._plugins, None  # cleared first: a plug-in that looks a name up must not recurse
        try:
            for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{package}.{info.name}")
        except BaseException:
            self._plugins = package  # a broken plug-in fails every lookup, not only the first
            raise

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
        self._load_plugins()
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
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
