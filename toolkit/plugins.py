"""The one registry the three kinds of plugin share: runtimes (``toolkit.runners.RUNTIMES``), formats
(``toolkit.exporters.FORMATS``) and dataset sources (``toolkit.datasets.SOURCES``). Each module of the package
registers itself next to its code (``REGISTRY.register(item)``); the package and its entry-point group are
scanned once, on the first lookup; ``get`` of an unknown name is an error naming the known ones, never a
fall-through to a default; ``names`` and ``load_all`` give them in their declared order."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def scan(package: str, path: Iterable[str], skip: frozenset[str] = frozenset(), group: str | None = None) -> None:
    """Import every module and subpackage of ``package`` (its ``__path__``) but private ones and ``skip``, then
    the modules another distribution names in the entry-point ``group`` (a plugin installed with pip)."""
    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
    if group is not None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=group):
            ep.load()


class Registry(Generic[T]):
    """Plugins of one kind, keyed by ``key(item)`` and listed by ``order(item)`` (ties: registration order).

    ``package`` is scanned (but ``skip`` and private modules), then the entry-point ``group``, before the first
    lookup; ``on_load`` runs once after that scan (the formats registry orders its variants there).
    """

    def __init__(self, what: str, package: str, *, key: Callable[[T], str], order: Callable[[T], Any],
                 group: str | None = None, skip: frozenset[str] = frozenset({"base"}),
                 on_load: Callable[[], None] | None = None):
        self.what = what  # singular: "runtime", "format", "dataset source"
        self.package = package
        self.group = group
        self._key, self._order, self._skip, self._on_load = key, order, skip, on_load
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, item: T) -> T:
        """Add ``item`` under its key; two different plugins under one name is an error (re-registering the
        same is not)."""
        name = self._key(item)
        if name in self._entries and self._entries[name] != item:
            raise ValueError(f"two {self.what}s named {name!r}")
        self._entries[name] = item
        return item

    def load_all(self) -> dict[str, T]:
        """Every plugin (the package scanned once), in order."""
        if not self._loaded:
            # marked first: a module that looks plugins up while the scan imports it sees those registered so far
            self._loaded = True
            scan(self.package, importlib.import_module(self.package).__path__, self._skip, self.group)
            if self._on_load is not None:
                self._on_load()
        return dict(sorted(self._entries.items(), key=lambda kv: self._order(kv[1])))

    def names(self) -> list[str]:
        return list(self.load_all())

    def get(self, name: str) -> T:
        """The plugin named ``name``, or a UsageError naming the known ones."""
        known = self.load_all()
        if name not in known:
            from toolkit.errors import UsageError

            raise UsageError(f"unknown {self.what} {name!r} (known: {', '.join(known)})")
        return known[name]

    def forget(self, *names: str) -> None:
        """Drop ``names`` and scan again on the next lookup (tests that install a plugin for a while)."""
        for name in names:
            self._entries.pop(name, None)
        self._loaded = False
