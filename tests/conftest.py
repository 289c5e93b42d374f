"""Shared fixtures: real MNIST from ../shared (or $TOOLKIT_DATA_DIR), one quick training run
and one export per test session."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest_plugins = ["pytester"]  # the pytest plugin is tested in a project of its own

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"
QUICK_TRAIN_LIMIT = 12_000


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("TOOLKIT_DATA_DIR") or DEFAULT_DATA)
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"MNIST not found in {path}: set TOOLKIT_DATA_DIR to the directory of the IDX files")
    return path


@pytest.fixture(scope="session")
def mnist(data_dir):
    """MNIST read with plain gzip and numpy, no toolkit code (so checks against it are independent):
    float32 images in [0, 1], (N, 28, 28, 1); the first 5,000 training images are the validation split."""

    def idx(name: str, header: int) -> np.ndarray:
        return np.frombuffer(gzip.decompress((data_dir / name).read_bytes()), np.uint8, offset=header)

    x = idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1).astype(np.float32) / 255.0
    y = idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64)
    split = lambda images, labels: SimpleNamespace(images=images, labels=labels)  # noqa: E731
    return SimpleNamespace(
        train=split(x[5000:], y[5000:]), validation=split(x[:5000], y[:5000]),
        test=split(idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1).astype(np.float32) / 255.0,
                   idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)),
    )


@pytest.fixture(scope="session")
def quick_model(tmp_path_factory, data_dir) -> tuple[Path, dict]:
    """One epoch on 12,000 images: the model most tests export and check."""
    from toolkit.config import TrainConfig
    from toolkit.train import train

    out = tmp_path_factory.mktemp("quick")
    record = train(TrainConfig(out=out, data_dir=data_dir, epochs=1, train_limit=QUICK_TRAIN_LIMIT,
                               verbose=False))
    return out, record


@pytest.fixture(scope="session")
def quick_export(quick_model, data_dir) -> Path:
    """Every variant of the quick model (the six, plus tflite-micro: tflite-micro is a dev
    dependency). Read-only for tests: copy it to change it."""
    from toolkit import exporters
    from toolkit.config import ExportConfig
    from toolkit.export import export

    out, _ = quick_model
    export(ExportConfig(exports=out, data_dir=data_dir, calibration_samples=200, verbose=False),
           exporters.select("all", None))
    return out


@pytest.fixture
def export_copy(quick_export, tmp_path) -> Path:
    """A private copy of the quick export, safe to modify."""
    dest = tmp_path / "exports"
    shutil.copytree(quick_export, dest, symlinks=True)
    return dest


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under a directory, by relative path, for byte-identity checks."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
