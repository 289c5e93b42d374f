"""The one input transform every runner shares, stated once at export and recorded in the
manifest: images are read as uint8, converted to the model's colour mode, resized only when
asked (``--resize``), scaled, and reshaped losslessly to the model's input layout.

Scales (``--scale``):

- ``unit``: x / 255, in [0, 1] (the default);
- ``symmetric``: x / 127.5 - 1, in [-1, 1];
- ``raw``: x as float32, 0..255, for models with their own ``Rescaling``/``Normalization`` layer
  (``auto`` picks it for them);
- ``standard``: (x / 255 - mean) / std per channel (``--mean``, ``--std``).

Lossless reshapes are automatic: (H, W, 1) images into an (H, W) or a flat (H*W*C) model input.
Anything that would change the data (colour conversion, resizing) happens only when asked; a
mismatch is one line naming both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.config import PreprocessOptions as Options
from toolkit.errors import DataError, UsageError

SCALES = {
    "unit": "x / 255, in [0, 1]",
    "symmetric": "x / 127.5 - 1, in [-1, 1]",
    "raw": "x, pixel values 0..255 (the model rescales them itself)",
    "standard": "(x / 255 - mean) / std per channel",
}
COLOR_MODES = {"grayscale": 1, "rgb": 3}
CHANNEL_NAMES = {1: "grayscale (1 channel)", 3: "RGB (3 channels)"}


@dataclass(frozen=True)
class Preprocessing:
    scale: str
    color_mode: str  # "grayscale" or "rgb"
    image_size: tuple[int, int]  # (H, W) of the images fed to the model
    resize: bool  # images are resized to image_size (otherwise they must have that size)
    input_shape: tuple[int, ...]  # the model's per-image input shape the images are reshaped to
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color_mode]

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """uint8 (n, H, W, C) -> float32 (n, *input_shape)."""
        x = raw.astype(np.float32)
        if self.scale == "unit":
            x = x / 255.0
        elif self.scale == "symmetric":
            x = x / 127.5 - 1.0
        elif self.scale == "standard":
            x = (x / 255.0 - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        elif self.scale != "raw":
            raise ValueError(f"unknown scale {self.scale!r}")
        return x.reshape((len(x), *self.input_shape))

    def _read_kwargs(self) -> dict:
        return {"channels": self.channels, "size": self.image_size if self.resize else None}

    def read_raw(self, split, indices=None) -> np.ndarray:
        """uint8 images as the model sees them before scaling (for plots)."""
        return split.read(indices, **self._read_kwargs())

    def load(self, split, indices=None) -> np.ndarray:
        """float32 model inputs for the images at ``indices`` of ``split`` (all when None)."""
        return self.finish(self.read_raw(split, indices))

    def batches(self, split, batch_size: int, indices=None):
        """(indices, float32 model inputs), one batch at a time."""
        for idx, raw in split.batches(batch_size, indices, **self._read_kwargs()):
            yield idx, self.finish(raw)

    def describe(self) -> str:
        size = f"{self.image_size[0]}x{self.image_size[1]}"
        parts = [f"{self.color_mode}", f"{size}" + (" (resized, bilinear)" if self.resize else ""),
                 f"scale {self.scale}: {SCALES[self.scale]}"]
        if self.scale == "standard":
            parts.append(f"mean {list(self.mean)}, std {list(self.std)}")
        parts.append(f"model input {tuple(self.input_shape)}")
        return ", ".join(parts)

    def to_json(self) -> dict:
        return {"scale": self.scale, "color_mode": self.color_mode, "image_size": list(self.image_size),
                "resize": self.resize, "input_shape": list(self.input_shape),
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None,
                "description": self.describe()}

    @classmethod
    def from_json(cls, d: dict) -> Preprocessing:
        return cls(scale=d["scale"], color_mode=d["color_mode"], image_size=tuple(d["image_size"]),
                   resize=bool(d["resize"]), input_shape=tuple(d["input_shape"]),
                   mean=tuple(d["mean"]) if d.get("mean") is not None else None,
                   std=tuple(d["std"]) if d.get("std") is not None else None)


def _size_text(size) -> str:
    return "x".join("any" if s is None else str(s) for s in size)


def check_classes(dataset, info) -> None:
    """The model's outputs must cover the dataset's labels (and a folder's classes one to one)."""
    if dataset.num_classes > info.classes:
        raise DataError(f"model '{info.name}' has {info.classes} outputs but dataset {dataset.source} has "
                        f"{dataset.num_classes} classes (labels 0..{dataset.num_classes - 1})",
                        hint="use the dataset the model was trained for")
    if dataset.classes_by_name and dataset.num_classes != info.classes:
        raise DataError(f"model '{info.name}' has {info.classes} outputs but dataset {dataset.source} has "
                        f"{dataset.num_classes} class folders ({', '.join(dataset.class_names)}): folder "
                        "order would not match the model's classes")


def resolve(dataset, info, options: Options | None = None) -> Preprocessing:
    """The preprocessing that feeds ``dataset`` to the model ``info`` describes; one line naming
    both sides when they do not fit (exit 2 when a flag fixes it, 3 when the data cannot)."""
    options = options or Options()
    check_classes(dataset, info)
    h, w, c = dataset.image_shape
    model_c = info.channels
    model = f"model '{info.name}'"
    data = f"dataset {dataset.source}"
    if options.color_mode != "auto":
        if options.color_mode not in COLOR_MODES:
            raise UsageError(f"--color-mode must be one of auto, {', '.join(COLOR_MODES)}, got {options.color_mode!r}")
        channels = COLOR_MODES[options.color_mode]
        if model_c is not None and channels != model_c:
            raise UsageError(f"--color-mode {options.color_mode} gives {CHANNEL_NAMES[channels]} but {model} "
                             f"takes {CHANNEL_NAMES[model_c]}")
    else:
        channels = model_c or c
        if channels != c:
            flag = "rgb" if channels == 3 else "grayscale"
            raise UsageError(f"{model} takes {CHANNEL_NAMES[channels]} images but {data} has "
                             f"{CHANNEL_NAMES[c]} images", hint=f"pass --color-mode {flag} to convert them")
    if info.image_size is not None:
        mh, mw = info.image_size
        if options.input_size is not None and (mh, mw) == tuple(options.input_size):
            pass  # the size the model already takes (an export made with --input-size, replayed)
        elif options.input_size is not None and None not in (mh, mw):
            raise UsageError(f"--input-size applies to models that take any height and width; {model} takes "
                             f"{mh}x{mw} images", hint="leave --input-size out (or use --resize for the data)")
        elif options.input_size is None and (mh is None or mw is None):
            raise UsageError(f"{model} takes images of any height and width (input {_size_text(info.input_shape)}): "
                             "the exported files need one size", hint=f"pass --input-size HxW (this data's images "
                             f"are {h}x{w}: --input-size {h}x{w})")
        target = tuple(options.input_size) if options.input_size is not None else (mh, mw)
        if target != (h, w) and not options.resize:
            raise UsageError(f"{model} takes {_size_text(info.image_size)} images but {data} has {h}x{w} images",
                             hint="pass --resize to resize them to the model's input (bilinear)")
        resize = bool(options.resize)  # every image that differs from the target, even when most do not
        input_shape = (target[0], target[1], channels) if len(info.input_shape) == 3 else target
    else:  # flat: the images' values, in order, must fill the vector exactly
        (length,) = info.input_shape
        if options.resize:
            raise UsageError(f"{model} takes flat vectors of {length} values: --resize cannot tell which image "
                             "size they come from")
        if h * w * channels != length:
            raise UsageError(f"{model} takes flat vectors of {length} values but {data} has {h}x{w} "
                             f"{CHANNEL_NAMES[channels]} images = {h * w * channels} values")
        target, resize, input_shape = (h, w), False, (length,)
    scale = options.scale
    if scale == "auto":
        scale = "raw" if info.rescaling else "unit"
    if scale not in SCALES:
        raise UsageError(f"--scale must be one of auto, {', '.join(SCALES)}, got {scale!r}")
    mean = std = None
    if scale == "standard":
        if options.mean is None or options.std is None:
            raise UsageError("--scale standard needs --mean and --std (one value, or one per channel)")
        mean, std = _per_channel(options.mean, channels, "--mean"), _per_channel(options.std, channels, "--std")
        if min(std) <= 0:
            raise UsageError(f"--std values must be positive, got {list(options.std)}")
    elif options.mean is not None or options.std is not None:
        raise UsageError(f"--mean and --std apply to --scale standard, not {scale}")
    return Preprocessing(scale=scale, color_mode="rgb" if channels == 3 else "grayscale", image_size=target,
                         resize=resize, input_shape=tuple(int(s) for s in input_shape), mean=mean, std=std)


def _per_channel(values, channels: int, flag: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        allowed = "1 value" if channels == 1 else f"1 or {channels} values"
        raise UsageError(f"{flag} takes {allowed} for {CHANNEL_NAMES[channels]} images, got {len(values)}")
    return values


def for_training(dataset, options: Options | None = None) -> Preprocessing:
    """Preprocessing when the model does not exist yet: the data's own size and colour mode."""
    options = options or Options()
    h, w, c = dataset.image_shape
    if options.resize or options.input_size is not None:
        raise UsageError(f"--{'resize' if options.resize else 'input-size'} needs a model to take the size from; "
                         "`toolkit train` builds the model for the images' own size")
    if options.color_mode != "auto" and options.color_mode not in COLOR_MODES:
        raise UsageError(f"--color-mode must be one of auto, {', '.join(COLOR_MODES)}, got {options.color_mode!r}")
    channels = COLOR_MODES.get(options.color_mode, c)

    from toolkit.modelinfo import ModelInfo

    to_be = ModelInfo(name="to be trained", input_name="image", input_shape=(h, w, channels),
                      classes=dataset.num_classes, output="logits", output_evidence="", rescaling=None, parameters=0)
    return resolve(dataset, to_be, Options(scale="unit" if options.scale == "auto" else options.scale,
                                           color_mode=options.color_mode, mean=options.mean, std=options.std))
