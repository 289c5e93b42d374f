"""Datasets behind one interface (``base.Dataset``), one module per source, chosen by
``--dataset``:

- ``mnist``: the four MNIST IDX files (``--data-dir`` / ``$TOOLKIT_DATA_DIR``), the default;
- a directory: images in class subfolders (``folder.py``);
- a ``.npz`` file: ``x_train, y_train, x_test, y_test`` (``npz.py``).

A name or path that matches no source is an error listing the sources, never a fall-back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.datasets.base import Dataset, Split, sample_indices
from toolkit.errors import DataError

DEFAULT = "mnist"


@dataclass(frozen=True)
class Source:
    kind: str
    matches: Callable[[str], bool]
    open: Callable[..., Dataset]  # open(spec, data_dir=..., test_fraction=...)
    describe: str


def _open_mnist(spec: str, data_dir=None, test_fraction=None) -> Dataset:
    from toolkit.datasets.mnist import open_mnist

    return open_mnist(data_dir)


def _open_folder(spec: str, data_dir=None, test_fraction=None) -> Dataset:
    from toolkit.datasets.folder import open_folder

    return open_folder(spec, test_fraction)


def _open_npz(spec: str, data_dir=None, test_fraction=None) -> Dataset:
    from toolkit.datasets.npz import open_npz

    return open_npz(spec)


SOURCES = (
    Source("mnist", lambda s: s == "mnist", _open_mnist, "mnist: the MNIST IDX files (--data-dir)"),
    Source("npz", lambda s: s.lower().endswith(".npz"), _open_npz,
           "PATH.npz: x_train, y_train, x_test, y_test arrays"),
    Source("folder", lambda s: Path(s).is_dir(), _open_folder,
           "DIR: images in class subfolders (DIR/train/<class>/, DIR/test/<class>/, or DIR/<class>/)"),
)


def open_dataset(spec: str | os.PathLike | None = None, *, data_dir=None, test_fraction: float | None = None) -> Dataset:
    """The dataset ``--dataset SPEC`` names (default: mnist)."""
    spec = DEFAULT if spec is None else str(spec)
    for source in SOURCES:
        if source.matches(spec):
            return source.open(spec, data_dir=data_dir, test_fraction=test_fraction)
    if not Path(spec).exists():
        raise DataError(f"--dataset {spec}: no such file or directory",
                        hint="give mnist, a folder of class subfolders, or an .npz file")
    raise DataError(f"--dataset {spec}: not a dataset this toolkit reads; it takes "
                    + "; ".join(s.describe for s in SOURCES))


def reopen(record: dict | None, data_dir=None) -> Dataset:
    """The dataset a manifest or training record names (mnist when it names none)."""
    if not record:
        return open_dataset(DEFAULT, data_dir=data_dir)
    return open_dataset(record.get("spec", DEFAULT), data_dir=data_dir,
                        test_fraction=record.get("options", {}).get("test_fraction"))


__all__ = ["Dataset", "Split", "open_dataset", "reopen", "sample_indices", "SOURCES"]
