"""MNIST from the four original IDX files.

Where the data comes from, in order:
  1. ``--data-dir DIR`` (the CLI passes it here as ``data_dir``);
  2. the environment variable ``TOOLKIT_DATA_DIR``;
  3. the Keras cache (``$KERAS_HOME/datasets/mnist.npz``, default ``~/.keras``), read directly when it is
     there (offline too), else downloaded into it by Keras.

Splits follow the seed tutorials (TensorFlow's old ``input_data.read_data_sets``): the first
5,000 training images are the validation set, the other 55,000 the training set, and the
10,000 t10k images the test set. Images are uint8 (N, 28, 28, 1); the training files are
decompressed only when a command asks for the training or validation split.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from toolkit.datasets import SOURCES, Source
from toolkit.datasets.base import Dataset, Split, array_reader, check_labels
from toolkit.errors import DataError

ENV_VAR = "TOOLKIT_DATA_DIR"
VALIDATION_SIZE = 5_000
IMAGE_SHAPE = (28, 28, 1)
CLASS_NAMES = tuple(str(k) for k in range(10))

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


def read_idx(path: Path, expected_magic: int, expected_count: int) -> np.ndarray:
    """Read one gzipped IDX file, checking magic number, count, dims and length."""
    if not path.is_file():
        raise DataError(f"MNIST file {path} not found", hint=HOW_TO_PROVIDE)
    try:
        raw = gzip.decompress(path.read_bytes())
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
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


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


def keras_cache() -> Path:
    """Where Keras keeps mnist.npz: $KERAS_HOME/datasets, else ~/.keras/datasets."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"


_NPZ_SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}


def _read_cache(cache: Path) -> dict[str, np.ndarray]:
    """mnist.npz read directly, its shapes, dtypes and labels checked (as the IDX files are)."""
    try:
        with np.load(cache, allow_pickle=False) as f:
            arrays = {k: f[k] for k in _NPZ_SHAPES}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{cache} is not a readable MNIST .npz ({type(exc).__name__}: {exc})",
                        hint="delete it to download it again, or " + HOW_TO_PROVIDE) from None
    for key, shape in _NPZ_SHAPES.items():
        if arrays[key].shape != shape or arrays[key].dtype != np.uint8:
            raise DataError(f"{cache}: {key} is {arrays[key].dtype} {arrays[key].shape}, expected uint8 {shape}",
                            hint="delete it to download it again")
    if arrays["y_train"].max() > 9 or arrays["y_test"].max() > 9:
        raise DataError(f"{cache}: labels outside 0..9")
    return arrays


def _from_keras() -> tuple[dict[str, np.ndarray], str, dict]:
    """The Keras cache when it holds mnist.npz (read directly and checked: works offline), else Keras'
    own download into it."""
    cache = keras_cache()
    if cache.is_file():
        a = _read_cache(cache)
        xtr, ytr, xte, yte = a["x_train"], a["y_train"], a["x_test"], a["y_test"]
    else:
        from toolkit._quiet import keras

        try:
            (xtr, ytr), (xte, yte) = keras().datasets.mnist.load_data()
        except Exception as exc:  # network errors come in many types
            raise DataError(
                f"no MNIST data given and the Keras download failed ({type(exc).__name__}: {exc})",
                hint=HOW_TO_PROVIDE,
            ) from None
    digest = {"mnist.npz": hashlib.sha256(cache.read_bytes()).hexdigest()} if cache.is_file() else {}
    arrays = {"train_images": xtr, "train_labels": ytr, "test_images": xte, "test_labels": yte}
    return arrays, f"keras cache {cache}", digest


class _Files:
    """The IDX files of one directory (or the Keras cache), each decompressed on first use."""

    def __init__(self, path: Path | None):
        self.path = path
        self._keras: dict | None = None
        if path is None:
            self._keras, self.source, self.sha256 = _from_keras()
        else:
            self.source = str(path.resolve())
            # hashing the compressed files is cheap; decompressing the training set is not
            self.sha256 = {}
            for name, _, _ in FILES.values():
                f = path / name
                if not f.is_file():
                    raise DataError(f"MNIST file {f} not found", hint=HOW_TO_PROVIDE)
                self.sha256[name] = hashlib.sha256(f.read_bytes()).hexdigest()

    @functools.cache  # noqa: B019 - one instance per dataset, kept as long as the dataset
    def array(self, key: str) -> np.ndarray:
        if self._keras is not None:
            arr = self._keras[key]
        else:
            name, magic, count = FILES[key]
            arr = read_idx(self.path / name, magic, count)
        if key.endswith("labels"):
            return check_labels(arr, key.split("_")[0].replace("train", "training"), self.source, classes=10)
        return arr[..., None]  # (N, 28, 28) -> (N, 28, 28, 1)


def _lazy_split(files: _Files, name: str, prefix: str, sl: slice) -> Split:
    """A split whose labels and images are decompressed on first access."""
    labels = files.array(f"{prefix}_labels")[sl]
    return Split(name, labels, lambda idx, c, s: array_reader(files.array(f"{prefix}_images")[sl])(idx, c, s),
                 in_memory=True)


def open_mnist(data_dir: str | os.PathLike | None = None) -> Dataset:
    files = _Files(resolve_data_dir(data_dir))
    combined = hashlib.sha256("".join(f"{k}={v}\n" for k, v in sorted(files.sha256.items())).encode()).hexdigest()
    return Dataset(
        kind="mnist",
        source=files.source,
        class_names=CLASS_NAMES,
        image_shape=IMAGE_SHAPE,
        train=_lazy_split(files, "train", "train", slice(VALIDATION_SIZE, None)),
        validation=_lazy_split(files, "validation", "train", slice(0, VALIDATION_SIZE)),
        test=_lazy_split(files, "test", "test", slice(None)),
        fingerprint={"method": "sha256 of each compressed IDX file", "sha256": combined, "files": files.sha256},
        digest_key="files",
        validation_named=True,  # apart from the 55,000 `toolkit train` fits on
        split_rule="MNIST: the first 5,000 of the 60,000 training images are the validation split, the other "
                   "55,000 the training split; the 10,000 t10k images the test split",
    )


def _open(spec: str, data_dir=None) -> Dataset:
    return open_mnist(data_dir)


SOURCES.register(Source("mnist", lambda s: s == "mnist", _open, "mnist: the MNIST IDX files (--data-dir DIR, else $TOOLKIT_DATA_DIR, else the Keras cache/download)", order=10,
                       article="the MNIST"))
