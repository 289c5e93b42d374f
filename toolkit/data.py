"""MNIST from the four original IDX files.

Where the data comes from, in order:
  1. ``--data-dir DIR`` (the CLI passes it here as ``data_dir``);
  2. the environment variable ``TOOLKIT_DATA_DIR``;
  3. the Keras cache (``~/.keras/datasets/mnist.npz``), downloading it if online.

Splits follow the seed tutorials (TensorFlow's old ``input_data.read_data_sets``): the first
5,000 training images are the validation set, the other 55,000 the training set, and the
10,000 t10k images the test set. Pixels are float32 in [0, 1], NHWC (N, 28, 28, 1).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import DataError

ENV_VAR = "TOOLKIT_DATA_DIR"
VALIDATION_SIZE = 5_000
IMAGE_SHAPE = (28, 28, 1)

FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", 2051, 60_000),
    "train_labels": ("train-labels-idx1-ubyte.gz", 2049, 60_000),
    "test_images": ("t10k-images-idx3-ubyte.gz", 2051, 10_000),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", 2049, 10_000),
}

HOW_TO_PROVIDE = (
    f"pass --data-dir DIR or set {ENV_VAR}=DIR, where DIR holds the four MNIST IDX .gz files "
    "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz)"
)


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # float32 (N, 28, 28, 1) in [0, 1]
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.images[:n], self.labels[:n])


@dataclass(frozen=True)
class Mnist:
    train: Split
    validation: Split
    test: Split
    source: str  # where it was read from, for the records
    sha256: dict  # file name -> sha256 of the compressed file as read


def read_idx(path: Path, expected_magic: int, expected_count: int) -> np.ndarray:
    """Read one gzipped IDX file, checking magic number, count, dims and length."""
    return _read_idx(path, expected_magic, expected_count)[0]


def _read_idx(path: Path, expected_magic: int, expected_count: int) -> tuple[np.ndarray, str]:
    """The checked array and the sha256 of the compressed file, reading the file once."""
    if not path.is_file():
        raise DataError(f"MNIST file {path} not found", hint=HOW_TO_PROVIDE)
    try:
        compressed = path.read_bytes()
        raw = gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable gzip file ({exc})", hint="re-download it") from None
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[0:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{path} has IDX magic number {magic}, expected {expected_magic}: "
            "wrong file or corrupt", hint="re-download it"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if dims[0] != expected_count:
        raise DataError(f"{path} holds {dims[0]} items, expected {expected_count}")
    if ndim == 3 and dims[1:] != [28, 28]:
        raise DataError(f"{path} holds images of {dims[1]}x{dims[2]}, expected 28x28")
    expected_len = header + int(np.prod(dims))
    if len(raw) != expected_len:
        raise DataError(
            f"{path} is {len(raw)} bytes uncompressed, expected {expected_len}: truncated or corrupt",
            hint="re-download it",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims), hashlib.sha256(compressed).hexdigest()


def normalize(images_u8: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (images_u8.astype(np.float32) / 255.0)[..., None]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The directory to read from, or None for the Keras cache/download."""
    if data_dir is not None:
        path = Path(data_dir)
        origin = "--data-dir"
    elif os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
        origin = ENV_VAR
    else:
        return None
    if not path.is_dir():
        raise DataError(f"MNIST directory {path} (from {origin}) does not exist", hint=HOW_TO_PROVIDE)
    return path


def _from_keras() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, dict]:
    from toolkit._quiet import keras

    try:
        (xtr, ytr), (xte, yte) = keras().datasets.mnist.load_data()
    except Exception as exc:  # network errors come in many types
        raise DataError(
            f"no MNIST data given and the Keras download failed ({type(exc).__name__}: {exc})",
            hint=HOW_TO_PROVIDE,
        ) from None
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"
    digest = {}
    if cache.is_file():
        digest["mnist.npz"] = hashlib.sha256(cache.read_bytes()).hexdigest()
    return xtr, ytr, xte, yte, f"keras cache {cache}", digest


def load_mnist(data_dir: str | os.PathLike | None = None) -> Mnist:
    path = resolve_data_dir(data_dir)
    if path is None:
        xtr, ytr, xte, yte, source, digest = _from_keras()
    else:
        arrays, digest = _read_files(path, tuple(FILES))
        xtr, ytr = arrays["train_images"], arrays["train_labels"]
        xte, yte = arrays["test_images"], arrays["test_labels"]
        source = str(path.resolve())
    _check_labels(ytr, "training", source)
    _check_labels(yte, "test", source)
    images = normalize(xtr)
    labels = ytr.astype(np.int64)
    return Mnist(
        train=Split(images[VALIDATION_SIZE:], labels[VALIDATION_SIZE:]),
        validation=Split(images[:VALIDATION_SIZE], labels[:VALIDATION_SIZE]),
        test=Split(normalize(xte), yte.astype(np.int64)),
        source=source,
        sha256=digest,
    )


def _read_files(path: Path, keys: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    arrays, digest = {}, {}
    for key in keys:
        name, magic, count = FILES[key]
        arrays[key], digest[name] = _read_idx(path / name, magic, count)
    return arrays, digest


def _check_labels(labels: np.ndarray, what: str, source: str) -> None:
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"MNIST {what} labels outside 0..9 in {source}")


def load_test(data_dir: str | os.PathLike | None = None) -> Split:
    """The 10,000 test images only (parity and bench need nothing else)."""
    path = resolve_data_dir(data_dir)
    if path is None:
        return load_mnist(None).test
    arrays, _ = _read_files(path, ("test_images", "test_labels"))
    _check_labels(arrays["test_labels"], "test", str(path.resolve()))
    return Split(normalize(arrays["test_images"]), arrays["test_labels"].astype(np.int64))


def calibration_indices(count: int, seed: int = 0, population: int = 55_000) -> np.ndarray:
    """Fixed, seed-determined training-set indices for quantization calibration."""
    if count < 1 or count > population:
        raise ValueError(f"calibration count must be in 1..{population}, got {count}")
    return np.sort(np.random.default_rng(seed).choice(population, size=count, replace=False))
