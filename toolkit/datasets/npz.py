"""An ``.npz`` file with ``x_train, y_train, x_test, y_test``: the layout of the Keras dataset
cache files (``mnist.npz``; CIFAR-10 saved the same way).

Images: (N, H, W) or (N, H, W, C) with C = 1 or 3, as uint8 0..255 (or integers within that
range, or floats: within 0..1 they are taken as [0, 1] and mapped to 0..255, which the record
says). Labels: (N,) or (N, 1) class indices. An optional ``class_names`` array names the classes;
otherwise they are ``0 .. K-1``. Optional ``x_val, y_val``: validation images the model never trained on
(the int8 choices are made on them); without them a fixed-seed 10% of the training images are the
validation split, and what reports a choice says that the model may have trained on them.

The arrays are read whole, as ``np.load`` does (Keras' loaders do the same); for image sets larger
than memory, use a folder of images, which is decoded batch by batch.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from toolkit.datasets import SOURCES, Source
from toolkit.datasets.base import Dataset, Split, array_reader, check_labels, validation_split
from toolkit.errors import DataError

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _images(x: np.ndarray, key: str, source: str) -> tuple[np.ndarray, str | None]:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{source}: {key} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) with C = 1 or 3")
    note = None
    if x.dtype == np.uint8:
        return x, None
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{source}: {key} holds integers outside 0..255 ({x.min()}..{x.max()})")
        return x.astype(np.uint8), None
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"{source}: {key} contains NaN or Inf values")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise DataError(f"{source}: {key} holds values {lo:g}..{hi:g}; expected pixel values 0..255 or 0..1")
        if hi <= 1.0:
            x, note = x * 255.0, f"{key}: float values in [0, 1], multiplied by 255"
        else:
            note = f"{key}: float values in 0..255, rounded to uint8"
        return np.clip(np.round(x), 0, 255).astype(np.uint8), note
    raise DataError(f"{source}: {key} has dtype {x.dtype}; expected uint8 images")


def open_npz(path: str | os.PathLike) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist")
    source = str(path.resolve())
    try:
        with np.load(path, allow_pickle=False) as z:  # no pickles: a data file must not run code
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)} (has {', '.join(z.files) or 'nothing'}); "
                                "expected x_train, y_train, x_test, y_test as in the Keras dataset files")
            arrays = {k: z[k] for k in KEYS}
            if ("x_val" in z.files) != ("y_val" in z.files):
                raise DataError(f"{path} has {'x_val' if 'x_val' in z.files else 'y_val'} without "
                                f"{'y_val' if 'x_val' in z.files else 'x_val'}: give both, or neither")
            if "x_val" in z.files:
                arrays.update(x_val=z["x_val"], y_val=z["y_val"])
            names = z["class_names"] if "class_names" in z.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}") from None
    notes = []
    x_train, note = _images(arrays["x_train"], "x_train", source)
    notes.append(note)
    x_test, note = _images(arrays["x_test"], "x_test", source)
    notes.append(note)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{path}: x_train images are {x_train.shape[1:]} but x_test images {x_test.shape[1:]}")
    y_train = check_labels(arrays["y_train"], "training", source)
    y_test = check_labels(arrays["y_test"], "test", source)
    for x, y, what in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(x) != len(y):
            raise DataError(f"{path}: x_{what} has {len(x)} images but y_{what} {len(y)} labels")
    if not len(x_train) or not len(x_test):
        raise DataError(f"{path}: x_train and x_test must each hold at least one image")
    classes = int(max(y_train.max(), y_test.max())) + 1
    if names is not None:
        names = [str(n) for n in np.asarray(names).reshape(-1)]
        if len(names) < classes:
            raise DataError(f"{path}: class_names has {len(names)} names but the labels go up to {classes - 1}")
        class_names = tuple(names)
    else:
        class_names = tuple(str(k) for k in range(classes))
    named = "x_val" in arrays
    if named:
        x_val, note = _images(arrays["x_val"], "x_val", source)
        notes.append(note)
        y_val = check_labels(arrays["y_val"], "validation", source)
        if len(x_val) != len(y_val) or not len(x_val):
            raise DataError(f"{path}: x_val has {len(x_val)} images and y_val {len(y_val)} labels; expected the "
                            "same number, at least one")
        if x_val.shape[1:] != x_train.shape[1:]:
            raise DataError(f"{path}: x_val images are {x_val.shape[1:]} but x_train images {x_train.shape[1:]}")
        classes = max(classes, int(y_val.max()) + 1)
        if names is not None and len(names) < classes:
            raise DataError(f"{path}: class_names has {len(names)} names but y_val goes up to {classes - 1}")
        if names is None:
            class_names = tuple(str(k) for k in range(classes))
    fit, val = (np.arange(len(x_train)), None) if named else validation_split(len(x_train))
    train_all = Split("train", y_train, array_reader(x_train), in_memory=True)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return Dataset(
        kind="npz",
        source=source,
        class_names=class_names,
        image_shape=tuple(int(s) for s in x_train.shape[1:]),
        train=train_all if named else train_all.subset(fit, "train"),
        validation=Split("validation", y_val, array_reader(x_val), in_memory=True) if named
        else train_all.subset(val, "validation"),
        test=Split("test", y_test, array_reader(x_test), in_memory=True),
        fingerprint={"method": "sha256 of the .npz file", "sha256": digest.hexdigest()},
        split_rule="x_train/y_train, x_val/y_val and x_test/y_test as given" if named else
        "x_train/y_train and x_test/y_test as given; a fixed-seed (seed 0) 10% of the training images are the "
        "validation split",
        options={"notes": [n for n in notes if n]} if any(notes) else {},
        validation_named=named,
    )


def _open(spec: str, data_dir=None) -> Dataset:
    return open_npz(spec)


SOURCES.register(Source("npz", lambda s: s.lower().endswith(".npz"), _open,
                       "PATH.npz: x_train, y_train, x_test, y_test arrays", order=20, article="an .npz dataset's"))
