"""A directory of images in class subfolders, the convention of Keras'
``image_dataset_from_directory``::

    DIR/train/<class>/*.png|jpg|jpeg|bmp|gif      DIR/test/<class>/...     (DIR/val/<class>/...)

or, without ``train/`` and ``test/``, ``DIR/<class>/...`` split into training and test images by
a fixed-seed ``--test-fraction``. A ``val/`` (or ``validation/``) folder beside ``train/`` and ``test/``
holds validation images the model never trained on (the int8 choices are made on them); without it a
fixed-seed 10% of the training images are the validation split. Class names are the subfolder names, sorted (as Keras sorts
them); the label of an image is its folder's position in that list.

Only the file list is read when the dataset is opened (each file is stat'ed: a dangling link or an
empty file is refused there, naming it); images are decoded with Pillow when a batch asks for them,
so memory is bounded by the batch, not the dataset. Every image is converted to one colour mode:
grayscale when a fixed-seed sample of the files (and the first file) are all grayscale, RGB
otherwise, or what the model needs when ``channels=`` asks.

How each Pillow mode becomes 8-bit pixels (the rule is documented in README, "Your own data"):

- 8-bit modes (``L``, ``RGB``, ``P`` palette, ``LA``/``RGBA``/``PA`` with alpha, ``CMYK``, ``YCbCr``,
  ``1`` bilevel): Pillow's ``convert`` to ``L`` (ITU-R 601-2 luma) or ``RGB``; alpha is dropped. A
  palette of greys counts as greyscale data.
- 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``) and 32-bit integer greyscale (``I``)
  holding 16-bit values: scaled, ``round(v / 257)`` (65535 -> 255), never clipped (Pillow's own
  ``convert("L")`` clips every value above 255 to white). 16-bit RGB PNGs are opened by Pillow as
  8-bit ``RGB`` (the high byte of each value).
- anything else (floating-point ``F``, ``I`` values outside 0..65535, ...): refused in one line.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from toolkit.datasets import SOURCES, Source, SourceOption
from toolkit.datasets.base import SPLIT_SEED, Dataset, Split, validation_split
from toolkit.errors import DataError, UsageError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
WIDE_GRAY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}  # integer greyscale wider than 8 bits
GRAY_MODES = {"1", "L", "LA", "La", "F", *WIDE_GRAY_MODES}
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
    for f in files:
        _check_file(f)
    return files


def _check_file(path: str) -> int:
    """The file's size; one line naming it when it cannot be an image: a dangling link, an
    unreadable or empty file. (Checked when the dataset is opened, before any training or export
    starts, and before the fingerprint reads every size.)"""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        target = os.readlink(path) if os.path.islink(path) else None
        raise DataError(f"{path} is a link to {target!r}, which does not exist" if target is not None
                        else f"{path} disappeared while the dataset was read") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise DataError(f"{path} is empty (0 bytes): not an image", hint="remove it or replace it with the image")
    if not os.access(path, os.R_OK):
        raise DataError(f"cannot read {path}: permission denied")
    return size


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


def to_8bit(img, channels: int, path: str):
    """A Pillow image in 8-bit ``L`` (channels 1) or ``RGB`` (3) by the module's documented rule:
    16-bit greyscale scaled, never clipped; anything without a fixed 8- or 16-bit range refused."""
    from PIL import Image

    if img.mode in WIDE_GRAY_MODES:
        values = np.asarray(img)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise DataError(f"{path}: {img.mode} pixels span {low}..{high}, outside the 16-bit range this toolkit "
                            "scales to 8 bits", hint="save it as an 8- or 16-bit image")
        grey = Image.fromarray(np.round(values.astype(np.float64) / 257.0).astype(np.uint8), mode="L")
        return grey if channels == 1 else grey.convert("RGB")
    if img.mode == "F" or img.mode.startswith(("I;", "F;")):
        raise DataError(f"{path}: pixels of mode {img.mode} have no fixed range to map to 8 bits",
                        hint="save it as an 8- or 16-bit image")
    return img.convert("L" if channels == 1 else "RGB")


def _open_error(path: str, exc: BaseException) -> DataError:
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        return DataError(f"{path} is too large to decode safely: {exc}",
                         hint="resize it first; Pillow refuses images over twice Image.MAX_IMAGE_PIXELS")
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        return DataError(f"{path} is a link to {os.readlink(path)!r}, which does not exist")
    from toolkit.errors import first_line

    return DataError(f"cannot decode image {path}: {first_line(exc)}")


def _decode(path: str, channels: int, size: tuple[int, int] | None, expected: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = to_8bit(img, channels, path)
            if size is not None:
                if img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            elif img.size != (expected[1], expected[0]):
                raise UsageError(
                    f"{path} is {img.size[0]}x{img.size[1]} (width x height) but the dataset's images are "
                    f"{expected[1]}x{expected[0]}", hint="pass --resize to resize every image to the model's input")
            arr = np.asarray(img, dtype=np.uint8)
    except (DataError, UsageError):
        raise
    except Exception as exc:  # noqa: BLE001 - every decoding failure of a user's file is one line naming it
        raise _open_error(path, exc) from None
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


def _grey_palette(img) -> bool:
    """A palette image (P, PA) whose every palette colour is a grey: greyscale data in a palette file."""
    if img.mode not in ("P", "PA"):
        return False
    palette = img.getpalette() or []
    return bool(palette) and all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def _native_mode(files: list[str]) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) from the first file and a fixed-seed sample of the others."""
    from PIL import Image

    rng = np.random.default_rng(SPLIT_SEED)
    sample = [0, *rng.choice(len(files), size=min(MODE_SAMPLE, len(files)), replace=False).tolist()]
    channels, size = 1, None
    for j in sample:
        try:
            with Image.open(files[j]) as img:
                if size is None:
                    size = (img.size[1], img.size[0])
                if img.mode not in GRAY_MODES and not _grey_palette(img):
                    channels = 3
        except Exception as exc:  # noqa: BLE001 - one line naming the file
            raise _open_error(files[j], exc) from None
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
    val_dir = next((d for d in (root / "val", root / "validation") if d.is_dir()), None)
    val_files: list[str] = []
    if train_dir.is_dir() and test_dir.is_dir():
        class_names, train_files, train_labels = _index(train_dir)
        _, test_files, test_labels = _index(test_dir, class_names)
        rule = "train/ and test/ folders as given"
        options: dict = {}
        if val_dir is not None:  # images the model never trained on: the int8 choices are made on them
            _, val_files, val_labels = _index(val_dir, class_names)
            rule = f"train/, {val_dir.name}/ and test/ folders as given"
    elif train_dir.is_dir() or test_dir.is_dir():
        raise DataError(f"{root} has {'train/' if train_dir.is_dir() else 'test/'} but not "
                        f"{'test/' if train_dir.is_dir() else 'train/'}: give both, or neither (then "
                        "--test-fraction splits the class folders)")
    elif val_dir is not None:
        raise DataError(f"{root} has {val_dir.name}/ but not train/ and test/: a validation folder goes beside "
                        "both")
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
    named = bool(val_files)
    fit, val = (np.arange(len(train_files)), None) if named else validation_split(len(train_files))
    train_all = Split("train", train_labels, _file_reader(train_files, channels, size))
    test = Split("test", test_labels, _file_reader(test_files, channels, size))
    validation = Split("validation", val_labels, _file_reader(val_files, channels, size)) if named else \
        train_all.subset(val, "validation")
    return Dataset(
        kind="folder",
        source=str(root),
        class_names=tuple(class_names),
        image_shape=(*size, channels),
        train=train_all if named else train_all.subset(fit, "train"),
        validation=validation,
        test=test,
        fingerprint=_fingerprint(root, [*train_files, *val_files, *test_files]),
        split_rule=rule if named else
        rule + f"; a fixed-seed (seed {SPLIT_SEED}) 10% of the training images are the validation split",
        options=options,
        classes_by_name=True,
        validation_named=named,
    )


def _fraction(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _open(spec: str, data_dir=None, test_fraction: float | None = None) -> Dataset:
    return open_folder(spec, test_fraction)


SOURCES.register(Source(
    "folder", lambda s: Path(s).is_dir(), _open,
    "DIR: images in class subfolders (DIR/train/<class>/, DIR/test/<class>/, or DIR/<class>/)", order=30,
    article="an image folder's",
    options=(SourceOption("--test-fraction", "test_fraction", type=_fraction, metavar="F",
                          help="for a folder without train/ and test/: the fixed-seed share of images held out for "
                          "testing (default: 0.2)"),)))
