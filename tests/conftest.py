"""Shared fixtures: real MNIST from ../shared (or $TOOLKIT_DATA_DIR), one quick training run, one export of it
and one parity of that export per test run (built once, shared by pytest-xdist's workers)."""

from __future__ import annotations

import gzip
import json
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


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(directory)`` run once per test run: pytest-xdist's workers (pyproject.toml runs two) share the
    directory under their common temporary root; the first to take the file lock builds it, the others wait and
    read it. Without xdist, once per session as any session fixture."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-of-USER/pytest-N/, above each worker's popen-gwK/
    directory, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            directory.mkdir(exist_ok=True)
            build(directory)
            done.touch()
    return directory


@pytest.fixture(scope="session")
def quick_model(tmp_path_factory, data_dir) -> tuple[Path, dict]:
    """One epoch on 12,000 images: the model most tests export and check. (directory, its train.json)"""
    from toolkit.config import TrainConfig
    from toolkit.exportdir import ExportDir
    from toolkit.train import train

    def build(out: Path) -> None:
        train(TrainConfig(out=out, data_dir=data_dir, epochs=1, train_limit=QUICK_TRAIN_LIMIT, verbose=False))

    out = _built_once(tmp_path_factory, "quick", build)
    return out, json.loads(ExportDir(out).train_path.read_text())


@pytest.fixture(scope="session")
def quick_export(quick_model, tmp_path_factory, data_dir) -> Path:
    """Every variant of the quick model (the six, plus tflite-micro: tflite-micro is a dev
    dependency), in the model's directory. Read-only for tests: copy it to change it."""
    from toolkit import exporters
    from toolkit.config import ExportConfig
    from toolkit.export import export

    out, _ = quick_model

    def build(_: Path) -> None:
        export(ExportConfig(exports=out, data_dir=data_dir, calibration_samples=200, verbose=False),
               exporters.select("all", None))

    _built_once(tmp_path_factory, "quick-export", build)
    return out


@pytest.fixture(scope="session")
def quick_parity(quick_export, tmp_path_factory, data_dir) -> Path:
    """A copy of the quick export with one full `toolkit parity` of it, written as the command writes it
    (parity.json, its predictions, parity.md, the PNG): test_parity checks it, the gate's baseline copies it.
    Read-only for tests."""
    from toolkit.config import ParityConfig
    from toolkit.parity import run_parity
    from toolkit.parity.render import write_outputs

    def build(d: Path) -> None:
        shutil.rmtree(d)
        shutil.copytree(quick_export, d, symlinks=True)
        cfg = ParityConfig(exports=d, data_dir=data_dir, verbose=False)
        write_outputs(run_parity(cfg), cfg)

    return _built_once(tmp_path_factory, "quick-parity", build)


@pytest.fixture
def export_copy(quick_export, tmp_path) -> Path:
    """A private copy of the quick export, safe to modify."""
    dest = tmp_path / "exports"
    shutil.copytree(quick_export, dest, symlinks=True)
    return dest


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under a directory, by relative path, for byte-identity checks."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def dead_channel_model(path: Path, mnist, factor: float) -> Path:
    """A small CNN trained briefly on MNIST training images 5,000-34,999 (the first 5,000 are the validation split
    the toolkit judges on), with one dead ReLU channel whose outgoing weights are ``factor`` times the next layer's
    largest: each of that layer's per-channel int8 grids is then coarse for every other weight, so rounding to
    nearest loses agreement (tests/test_rounding.py, test_finetune.py; benchmarks/learned_rounding.py builds the
    same)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    h = layers.MaxPooling2D()(layers.Conv2D(16, 3, activation="relu", name="conv1")(inp))
    h = layers.MaxPooling2D()(layers.Conv2D(32, 3, activation="relu", name="conv2")(h))
    model = keras.Model(inp, layers.Dense(10, name="logits")(layers.Flatten()(h)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(mnist.train.images[5000:35000], mnist.train.labels[5000:35000], batch_size=64, epochs=2, verbose=0)
    w, b = model.get_layer("conv1").get_weights()
    b[0] = -100.0  # never active: the weights leaving it never meet a non-zero input
    model.get_layer("conv1").set_weights([w, b])
    w, b = model.get_layer("conv2").get_weights()
    signs = np.sign(np.random.default_rng(0).normal(size=w[:, :, 0, :].shape))
    w[:, :, 0, :] = factor * np.abs(w).max((0, 1, 2)) * signs
    model.get_layer("conv2").set_weights([w, b])
    model.save(path)
    return path
