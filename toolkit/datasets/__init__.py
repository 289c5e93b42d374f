"""Dataset sources as plugins: one module per source in this package (``mnist.py``, ``folder.py``,
``npz.py``), each registering a ``Source`` next to its code, found by scanning the package; chosen by
``--dataset``. A source declares its own command-line options (``SourceOption``): the CLI adds them, the
configs carry them as ``dataset_options`` and each source is opened with the ones it declared, so nothing
outside this package names a source or its options (tests/test_sources.py).

A name or path that matches no source is an error listing the sources, never a fall-back.

The registry is ``SOURCES`` (a ``toolkit.plugins.Registry``, as runtimes and formats have):
``SOURCES.register(Source(...))`` in a source's module, ``SOURCES.get(kind)``, ``names()`` and ``load_all()``
elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from toolkit.datasets.base import Dataset, Split, sample_indices
from toolkit.errors import DataError
from toolkit.plugins import Registry

DEFAULT = "mnist"
ENTRY_POINT_GROUP = "toolkit.datasets"  # sources other distributions provide


class Matches(Protocol):
    """``Source.matches``: whether ``--dataset SPEC`` names this source (sources are tried in their order)."""

    def __call__(self, spec: str, /) -> bool: ...


class Opener(Protocol):
    """``Source.open``: the dataset ``spec`` names, read from ``data_dir`` where the source uses one; the options
    the source declares (``SourceOption.dest``) come as keyword arguments, only those given. Raises DataError."""

    def __call__(self, spec: str, data_dir: str | os.PathLike | None = None) -> Dataset: ...


@dataclass(frozen=True)
class SourceOption:
    """A command-line option of one source (added to every command that takes --dataset)."""

    flag: str  # "--test-fraction"
    dest: str  # its key in ``dataset_options``, in the configs and in the dataset's record
    help: str
    type: Callable = str
    metavar: str | None = None
    recorded: bool = True  # kept in the manifest's export_config (what `verify --rebuild` reopens the data with)


@dataclass(frozen=True)
class Source:
    kind: str
    matches: Matches
    open: Opener
    describe: str  # one line: what --dataset takes for it
    order: int  # the order sources are tried and listed
    options: tuple[SourceOption, ...] = ()
    article: str = "the"  # how a report names its test split: "the MNIST", "an image folder's"


SOURCES: Registry[Source] = Registry("dataset source", __name__, key=lambda s: s.kind, order=lambda s: s.order,
                                     group=ENTRY_POINT_GROUP)
# the registry's methods under the names callers and third-party sources have used
register_source, sources = SOURCES.register, SOURCES.load_all


def source_options() -> list[SourceOption]:
    return [o for s in SOURCES.load_all().values() for o in s.options]


def article(kind: str | None) -> str:
    known = SOURCES.load_all()
    return known[kind].article if kind in known else "the"


def open_dataset(spec: str | os.PathLike | None = None, *, data_dir=None, **options) -> Dataset:
    """The dataset ``--dataset SPEC`` names (default: mnist), opened with the options its source declares
    (``options``: any source's, by dest; the others' are not its business)."""
    spec = DEFAULT if spec is None else str(spec)
    known = {o.dest for o in source_options()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"open_dataset: unknown dataset option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for source in SOURCES.load_all().values():
        if source.matches(spec):
            mine = {o.dest: options[o.dest] for o in source.options if options.get(o.dest) is not None}
            return source.open(spec, data_dir=data_dir, **mine)
    if not Path(spec).exists():
        raise DataError(f"--dataset {spec}: no such file or directory",
                        hint="give " + ", ".join(s.describe.split(":")[0] for s in SOURCES.load_all().values()))
    raise DataError(f"--dataset {spec}: not a dataset this toolkit reads; it takes "
                    + "; ".join(s.describe for s in SOURCES.load_all().values()))


def recorded_options(options: Mapping) -> dict:
    """The source options a manifest records (every recorded option's key, None when not given)."""
    return {o.dest: options.get(o.dest) for o in source_options() if o.recorded}


def reopen(record: dict | None, data_dir=None) -> Dataset:
    """The dataset a manifest or training record names (mnist when it names none)."""
    if not record:
        return open_dataset(DEFAULT, data_dir=data_dir)
    kept = record.get("options", {})
    return open_dataset(record.get("spec", DEFAULT), data_dir=data_dir,
                        **{o.dest: kept.get(o.dest) for o in source_options() if o.dest in kept})


__all__ = ["SOURCES", "Dataset", "Matches", "Opener", "Source", "SourceOption", "Split", "open_dataset",
           "recorded_options", "register_source", "reopen", "sample_indices", "source_options", "sources"]
