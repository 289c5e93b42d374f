"""What the three plugin registries share (runtimes in runners/, formats in exporters/, dataset sources in
datasets/): each module of the package registers itself next to its code, and the package is scanned once."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


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


def lookup(registry: dict, key: str, what: str):
    """``registry[key]``, or a UsageError naming the known keys: never a fall-through to a default."""
    if key not in registry:
        from toolkit.errors import UsageError

        raise UsageError(f"unknown {what} {key!r} (known: {', '.join(registry)})")
    return registry[key]


def add(registry: dict, key: str, item, what: str):
    """``registry[key] = item``; two different plugins under one name is an error (re-registering the same is not)."""
    if key in registry and registry[key] != item:
        raise ValueError(f"two {what} named {key!r}")
    registry[key] = item
    return item
