"""A directory of images in class subfolders, the convention of Keras'
``image_dataset_from_directory``::

    DIR/train/<class>/*.png|jpg|jpeg|bmp|gif      DIR/test/<class>/...

or, without ``train/`` and ``test/``, ``DIR/<class>/...`` split into training and test images by
a fixed-seed ``--test-fraction``. Class names are the subfolder names, sorted (as Keras sorts
them); the label of an image is its folder's position in that list.

Only the file list is read when the dataset is opened; images are decoded with Pillow when a
batch asks for them, so memory is bounded by the batch, not the dataset. Every image is
converted to one colour mode: grayscale when a fixed-seed sample of the files (and the first
file) are all grayscale, RGB otherwise, or what the model needs when ``channels=`` asks.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from toolkit.datasets.base import SPLIT_SEED, Dataset, Split, validation_split
from toolkit.errors import DataError, UsageError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
MODE_SAMPLE = 32  # files whose colour mode decides the dataset's
DEFAULT_TEST_FRACTION = 0.2


def _class_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _images_in(directory: Path) -> list[str]:
    """Image files under ``directory`` in a fixed order, as strings (a Path costs several times the
    memory, and an index of 100,000 files is kept for the life of the dataset)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.lower().endswith(EXTENSIONS) and not f.startswith(".")]
    return files


def _index(root: Path, class_names: list[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, files, labels) of ``root/<class>/...``."""
    dirs = _class_dirs(root)
    names = [d.name for d in dirs]
    if class_names is not None:
        extra = sorted(set(names) - set(class_names))
        if extra:
            raise DataError(f"{root} has class folder(s) {', '.join(extra)} that the training folder lacks "
                            f"(training classes: {', '.join(class_names)})")
    else:
        class_names = names
        if len(class_names) < 2:
            raise DataError(f"{root} has {len(class_names)} class subfolder(s); a classifier needs at least 2 "
                            "(layout: DIR/train/<class>/*.png and DIR/test/<class>/*.png, or DIR/<class>/*.png)")
    files, labels = [], []
    for d in dirs:
        found = _images_in(d)
        if not found and class_names is names:
            raise DataError(f"class folder {d} holds no images ({', '.join(EXTENSIONS)})")
        files += found
        labels += [class_names.index(d.name)] * len(found)
    if not files:
        raise DataError(f"no images ({', '.join(EXTENSIONS)}) under {root}")
    return class_names, files, np.asarray(labels, dtype=np.int64)


def _decode(path: str, channels: int, size: tuple[int, int] | None, expected: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None:
                if img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            elif img.size != (expected[1], expected[0]):
                raise UsageError(
                    f"{path} is {img.size[0]}x{img.size[1]} (width x height) but the dataset's images are "
                    f"{expected[1]}x{expected[0]}", hint="pass --resize to resize every image to the model's input")
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from None
    return arr[..., None] if arr.ndim == 2 else arr


def _file_reader(files: list[str], native_channels: int, native_size: tuple[int, int]):
    def read(idx: np.ndarray, channels: int | None, size: tuple[int, int] | None) -> np.ndarray:
        c = channels or native_channels
        h, w = size if size is not None else native_size
        out = np.empty((len(idx), h, w, c), dtype=np.uint8)
        for i, j in enumerate(idx.tolist()):
            out[i] = _decode(files[j], c, size, native_size)
        return out

    return read


def _native_mode(files: list[str]) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) from the first file and a fixed-seed sample of the others."""
    from PIL import Image, UnidentifiedImageError

    rng = np.random.default_rng(SPLIT_SEED)
    sample = [0, *rng.choice(len(files), size=min(MODE_SAMPLE, len(files)), replace=False).tolist()]
    channels, size = 1, None
    for j in sample:
        try:
            with Image.open(files[j]) as img:
                if size is None:
                    size = (img.size[1], img.size[0])
                if img.mode not in GRAY_MODES:
                    channels = 3
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot decode image {files[j]}: {exc}") from None
    return channels, size


def _fingerprint(root: Path, files: list[str]) -> dict:
    h = hashlib.sha256()
    for f in sorted(files):
        # plain strings: Path() would intern every file name for the life of the process
        h.update(f"{os.path.relpath(f, root).replace(os.sep, '/')}\t{os.stat(f).st_size}\n".encode())
    return {"method": "sha256 of the sorted list of relative file paths and sizes", "sha256": h.hexdigest(),
            "files": len(files)}


def open_folder(path: str | os.PathLike, test_fraction: float | None = None) -> Dataset:
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    root = root.resolve()
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        class_names, train_files, train_labels = _index(train_dir)
        _, test_files, test_labels = _index(test_dir, class_names)
        rule = "train/ and test/ folders as given"
        options: dict = {}
    elif train_dir.is_dir() or test_dir.is_dir():
        raise DataError(f"{root} has {'train/' if train_dir.is_dir() else 'test/'} but not "
                        f"{'test/' if train_dir.is_dir() else 'train/'}: give both, or neither (then "
                        "--test-fraction splits the class folders)")
    else:
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        if not 0 < fraction < 1:
            raise UsageError(f"--test-fraction must be between 0 and 1, got {fraction}")
        class_names, files, labels = _index(root)
        perm = np.random.default_rng(SPLIT_SEED).permutation(len(files))
        n_test = max(1, int(round(len(files) * fraction)))
        test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        if not len(train_idx):
            raise DataError(f"{root}: {len(files)} image(s) leave nothing to train on after the test split")
        train_files, train_labels = [files[i] for i in train_idx], labels[train_idx]
        test_files, test_labels = [files[i] for i in test_idx], labels[test_idx]
        rule = f"no train/test folders: a fixed-seed (seed {SPLIT_SEED}) {fraction:g} of the images are the test split"
        options = {"test_fraction": fraction}
    channels, size = _native_mode(train_files)
    fit, val = validation_split(len(train_files))
    train_all = Split("train", train_labels, _file_reader(train_files, channels, size))
    test = Split("test", test_labels, _file_reader(test_files, channels, size))
    return Dataset(
        kind="folder",
        source=str(root),
        class_names=tuple(class_names),
        image_shape=(*size, channels),
        train=train_all.subset(fit, "train"),
        validation=train_all.subset(val, "validation"),
        test=test,
        fingerprint=_fingerprint(root, [*train_files, *test_files]),
        split_rule=rule + f"; a fixed-seed (seed {SPLIT_SEED}) 10% of the training images are the validation split",
        options=options,
    )
