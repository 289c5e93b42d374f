"""The dataset interface: labelled images in three splits, read in batches on demand.

A ``Split`` keeps its labels in memory (a few bytes per image) and reads images only when
asked, by index, as uint8 arrays (n, H, W, C) with pixel values 0..255. Each source decides
how: MNIST and ``.npz`` hold their arrays, an image folder decodes only the files asked for,
so parity and calibration hold one batch of images at a time (Polygraphy's data loaders and
Keras' ``image_dataset_from_directory`` work the same way).

Colour conversion and resizing happen while reading (``channels=``, ``size=``), with Pillow,
the same way for every source; scaling to the model's input range is ``toolkit.preprocess``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from toolkit.errors import DataError


class Reader(Protocol):
    """How a source reads a split's images: uint8 (n, H, W, C) at ``indices`` into the split, converted to
    ``channels`` (None: as stored) and resized to ``size`` (H, W; None: as stored)."""

    def __call__(self, indices: np.ndarray, channels: int | None, size: tuple[int, int] | None, /) -> np.ndarray: ...

VALIDATION_FRACTION = 0.1  # of the training images, for sources without a validation split
SPLIT_SEED = 0  # fixed: every command sees the same splits


@dataclass(frozen=True)
class Split:
    name: str
    labels: np.ndarray = field(repr=False)  # int64 (N,)
    _reader: Reader = field(repr=False)
    in_memory: bool = False  # images already decoded in memory (mnist, npz)

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, indices=None, *, channels: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 images (n, H, W, C) at ``indices`` (all when None), converted to ``channels``
        (1 grayscale, 3 RGB) and resized to ``size`` (H, W) when given."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.name} split has {len(self)} images; index {idx.max()} asked for")
        return self._reader(idx, channels, size)

    def batches(self, batch_size: int, indices=None, **kwargs) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices, uint8 images) one batch at a time, in order."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            yield chunk, self.read(chunk, **kwargs)

    def subset(self, indices, name: str | None = None) -> Split:
        """The images at ``indices`` (in that order) as a split of their own."""
        idx = np.asarray(indices, dtype=np.int64)
        parent = self._reader
        return Split(name or self.name, self.labels[idx], lambda j, c, s: parent(idx[j], c, s), self.in_memory)

    def head(self, n: int | None) -> Split:
        return self if n is None or n >= len(self) else self.subset(np.arange(n))


@dataclass(frozen=True)
class Dataset:
    kind: str  # "mnist", "folder" or "npz"
    source: str  # where it was read from (resolved path)
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, C) as stored; C is 1 (grayscale) or 3 (RGB)
    train: Split
    validation: Split
    test: Split
    fingerprint: dict  # {"method": ..., "sha256": ..., ...}: identifies the data read
    split_rule: str  # how train/validation/test were formed
    options: dict = field(default_factory=dict)  # what reopens it (test_fraction, ...)
    # class k is the k-th class folder by name: a model must have exactly these outputs, one to one
    classes_by_name: bool = False
    digest_key: str = "sha256"  # the fingerprint entry a training record keeps (MNIST: each file's sha256)
    # True when the validation images are ones the user named apart from the training images (npz x_val/y_val,
    # a val/ folder): a model trained on the training images never saw them. False: they are a share of the
    # training images, which a model trained elsewhere may well have trained on (choices made on them are
    # optimistic, and every output that reports such a choice says so).
    validation_named: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def spec(self) -> str:
        """What ``--dataset`` takes to open this dataset again."""
        return "mnist" if self.kind == "mnist" else self.source

    def describe(self) -> dict:
        """The record written into every JSON file and manifest that used this dataset."""
        return {
            "kind": self.kind,
            "source": self.source,
            "spec": self.spec,
            "class_names": list(self.class_names),
            "image_shape": list(self.image_shape),
            "splits": {"train": len(self.train), "validation": len(self.validation), "test": len(self.test),
                       "rule": self.split_rule, "validation_named": self.validation_named},
            "fingerprint": self.fingerprint,
            "options": self.options,
        }


# ----------------------------------------------------------------------------- helpers for sources
def check_labels(labels: np.ndarray, what: str, source: str, classes: int | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:  # CIFAR's (N, 1)
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{source}: {what} labels have shape {labels.shape}; expected one integer class per image "
                        "(one-hot labels: store their argmax)")
    if labels.size and not np.issubdtype(labels.dtype, np.integer) and not np.all(np.mod(labels, 1) == 0):
        raise DataError(f"{source}: {what} labels are not whole numbers ({labels.dtype})")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(f"{source}: {what} labels include {labels.min()}; class indices start at 0")
    if classes is not None and labels.size and labels.max() >= classes:
        raise DataError(f"{source}: {what} labels go up to {labels.max()}, but there are {classes} classes")
    return labels


UNSEEN_NOTE = ("the validation images are a share of the training images: a model trained on all of them has "
               "seen these, so choices made on them are optimistic (name images it never trained on: x_val/y_val "
               "in the .npz, or a val/ folder beside train/ and test/)")


def validation_note(dataset: Dataset) -> str | None:
    """What every output reporting a choice made on the validation split says when the model may have trained
    on those images; None when the user named them apart."""
    return None if dataset.validation_named else UNSEEN_NOTE


def validation_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a fixed-seed VALIDATION_FRACTION of the training images."""
    if n < 2:
        return np.arange(n), np.arange(0)
    count = max(1, int(round(n * VALIDATION_FRACTION)))
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[count:]), np.sort(perm[:count])


def convert_array(images: np.ndarray, channels: int | None, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 (n, H, W, C) -> the channels and size asked for, with Pillow (the same conversions
    an image folder gets while decoding: ITU-R 601-2 luma for RGB -> grayscale, bilinear resize)."""
    c = images.shape[-1]
    same_size = size is None or tuple(size) == images.shape[1:3]
    if (channels is None or channels == c) and same_size:
        return images
    if same_size and channels == 3 and c == 1:
        return np.repeat(images, 3, axis=-1)
    from PIL import Image

    mode = {1: "L", 3: "RGB"}[channels or c]
    out = []
    for img in images:
        pil = Image.fromarray(img[..., 0] if c == 1 else img, mode={1: "L", 3: "RGB"}[c]).convert(mode)
        if not same_size:
            pil = pil.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(pil, dtype=np.uint8)
        out.append(arr[..., None] if arr.ndim == 2 else arr)
    if not out:
        h, w = size if size is not None else images.shape[1:3]
        return np.zeros((0, h, w, channels or c), np.uint8)
    return np.stack(out)


def array_reader(images: np.ndarray) -> Reader:
    """Reader over uint8 images (N, H, W, C) held in memory."""
    return lambda idx, channels, size: convert_array(images[idx], channels, size)


def sample_indices(count: int, population: int, seed: int = 0) -> np.ndarray:
    """A fixed, seed-determined sample of ``count`` distinct indices in ``range(population)``, sorted
    (calibration images, the TFLM parity sample)."""
    if count < 1 or count > population:
        raise ValueError(f"sample size must be in 1..{population}, got {count}")
    return np.sort(np.random.default_rng(seed).choice(population, size=count, replace=False))
