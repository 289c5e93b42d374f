"""The shared runner interface."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from toolkit.errors import DataError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # None (or -1 in TFLite) for a dynamic dimension
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = [None if (s is None or s == -1) else int(s) for s in self.shape]
        return {k: v for k, v in d.items() if v is not None or k in ("name", "shape", "dtype")}


def channels_first(shape) -> bool:
    """A 4-D input (N, C, H, W) with C of 1 or 3 whose last axis is not a channel axis: PyTorch's layout, and
    most ONNX models'. The toolkit's images are (N, H, W, C); a runner transposes them for such a model."""
    shape = tuple(shape)
    return len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3)


def to_channels_first(images: np.ndarray) -> np.ndarray:
    """The toolkit's (N, H, W, C) images as (N, C, H, W), contiguous."""
    return np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))


class Runner(ABC):
    """Subclasses set ``name``, ``input_spec`` and ``output_spec`` and implement ``load`` and ``run_raw``;
    ``prepare``, ``providers``, ``bench_fields`` and the hooks of ``_infer`` have defaults.

    Every runner takes the toolkit's images, (N, H, W, C) float32; a model whose input is channels-first
    (``layout`` "NCHW": PyTorch's, most ONNX models') gets them transposed in ``prepare``, outside the timer.

    ``_infer`` is a template, as Polygraphy's ``BaseRunner.infer`` calls ``infer_impl``: ``prepare`` (float
    images -> the model's dtype, quantized with the input tensor's own scale and zero point), ``_run_prepared``
    (the runtime's raw call), then ``_scores`` (the raw output dequantized with the output tensor's own scale and
    zero point, else float32), so every runtime hands parity float scores the same way.
    """

    name = "runner"
    input_spec: TensorSpec
    output_spec: TensorSpec
    # runtimes whose interpreter is not thread-safe set a threading.Lock: a shared runner is then serialised
    _lock: threading.Lock | None = None

    @property
    def layout(self) -> str:
        """"NCHW" when the model's input is channels-first (the runner transposes the toolkit's images), else
        "NHWC" for an image input (or the shape's own order: flat, no channel axis)."""
        return "NCHW" if channels_first(self.input_spec.shape) else "NHWC"

    @property
    def image_shape(self) -> tuple:
        """The input shape the runner takes from its caller: the model's, channels last."""
        shape = tuple(self.input_spec.shape)
        return (shape[0], *shape[2:], shape[1]) if self.layout == "NCHW" else shape

    def arrange(self, images: np.ndarray) -> np.ndarray:
        """The toolkit's (N, H, W, C) images in the model's layout."""
        return to_channels_first(images) if self.layout == "NCHW" else images

    def prepare(self, images: np.ndarray):
        """Float images -> the input ``run_raw`` takes (the model's layout and dtype), outside the timer: transposed
        to channels-first where the model is, quantized with the input tensor's own scale and zero point where it
        has them, else contiguous float32."""
        spec = self.input_spec
        images = self.arrange(images)
        if spec.scale is not None:
            return quantize(images, spec.scale, spec.zero_point, np.dtype(spec.dtype))
        return np.ascontiguousarray(images, dtype=np.float32)

    @abstractmethod
    def run_raw(self, x):
        """One inference on a prepared input; returns the raw output. The bench timer wraps this call."""

    @property
    def providers(self) -> list[str]:
        """What really ran the model (execution providers, delegates, devices)."""
        return [self.name]

    def bench_fields(self) -> dict:
        """Extra fields for each bench row (settings that change what was timed)."""
        return {}

    def used_device(self) -> str:
        """"cpu" or "cuda": where the model really ran (checked against --device)."""
        return "cpu"

    @classmethod
    @abstractmethod
    def load(cls, path: Path, **kwargs) -> Runner:
        """Load and validate the artifact at ``path``; raise DataError if it is unusable."""

    def _infer(self, images: np.ndarray) -> np.ndarray:
        """Run one already-checked float32 batch; return float32 scores (logits)."""
        return self._scores(self._run_prepared(self.prepare(images)))

    @property
    def fixed_batch(self) -> int | None:
        """The batch the model's input is fixed at (a PyTorch model's TFLite file where litert-torch kept no
        symbolic batch, an ONNX file from an older exporter), else None."""
        shape = self.input_spec.shape
        first = shape[0] if shape else None
        return first if isinstance(first, int) and first > 0 else None  # TFLite writes -1 for a dynamic batch

    def _run_prepared(self, x):
        """The raw output for a prepared batch: ``run_raw`` under ``_lock`` when there is one; a model with a
        fixed batch gets the images in pieces of that batch (the last one padded). A runtime that runs one image
        at a time overrides it (TFLM)."""
        size = self.fixed_batch
        if size is not None and len(x) != size:
            outs = []
            for i in range(0, len(x), size):
                piece = x[i : i + size]
                pad = size - len(piece)
                if pad:
                    piece = np.concatenate([piece, np.repeat(piece[-1:], pad, axis=0)])
                outs.append(self._run_prepared(piece)[: size - pad])
            return np.concatenate(outs)
        if self._lock is None:
            return self.run_raw(x)
        with self._lock:
            return self.run_raw(x)

    def _scores(self, raw) -> np.ndarray:
        """A raw output -> float32 scores: dequantized with the output tensor's own scale and zero point."""
        spec = self.output_spec
        if spec.scale is not None:
            return dequantize(raw, spec.scale, spec.zero_point)
        return np.asarray(raw, dtype=np.float32)

    def check_input(self, images: np.ndarray) -> None:
        if not isinstance(images, np.ndarray):
            raise DataError(f"{self.name}: expected a numpy array, got {type(images).__name__}")
        expected = self.image_shape
        if images.ndim != len(expected) or any(
            e not in (None, -1) and e != g for e, g in zip(expected[1:], images.shape[1:], strict=True)
        ):
            shown = tuple("N" if e in (None, -1) else e for e in expected)
            raise DataError(f"{self.name}: input shape {images.shape} does not match the model's {shown}")
        if images.dtype != np.float32:
            raise DataError(f"{self.name}: input dtype {images.dtype}, expected float32 images in [0, 1]")
        if not np.isfinite(images).all():
            raise DataError(f"{self.name}: input contains NaN or Inf values")

    def infer(self, images: np.ndarray) -> np.ndarray:
        """float32 images (N, ...) -> float32 logits (N, classes)."""
        self.check_input(images)
        return self._infer(images)

    def infer_batched(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
        self.check_input(images)
        return np.concatenate(
            [self._infer(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        )


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(x / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


class Sample(Protocol):
    """``ParityHooks.sample``: the sorted indices of the ``n`` test images it runs under ``cfg`` (None: all)."""

    def __call__(self, cfg: Any, n: int, /) -> np.ndarray | None: ...


class TwinResult(Protocol):
    """``ParityHooks.twin_result``: (metrics, [Verdict]) from the twins' per-image agreement ``same`` (bool per
    image run), their largest score difference, the ``sample`` run (None: all ``n`` test images) and ``cfg``."""

    def __call__(self, same: np.ndarray, max_abs_diff: float, sample: np.ndarray | None, n: int, cfg: Any,
                 /) -> tuple[dict, list]: ...


class Describe(Protocol):
    """``ParityHooks.describe``: a sentence for parity.md on what twin_result measured for the variant ``name``
    (its ``metrics``; ``scores``: what the outputs are called), or None."""

    def __call__(self, name: str, metrics: dict, scores: str, /) -> str | None: ...


@dataclass(frozen=True)
class ParityHooks:
    """What parity does differently for a runtime, declared next to it (TFLM's sample, twin and gate);
    parity's loop is generic.

    - ``sample(cfg, n)``: the sorted test-image indices it runs (None: all). A runtime checked on a sample
      carries no full-test-set gates there (on 1,000 images one image is 0.1 points: noise against bounds
      meant for 10,000); its twin's gate speaks for it, the full-set gates belong to the file's other runtimes.
    - ``twin(runner)``: the same model bytes on another runtime, fed the same images batch by batch.
    - ``twin_result(same, max_abs_diff, sample, n, cfg)``: (metrics, [Verdict]) from the twins' per-image
      agreement (``same``: bool per image run) and largest score difference.
    - ``gate_names``: the gates twin_result adds (the pytest plugin lists them before parity runs).
    - ``describe(name, metrics, scores)``: a sentence for parity.md on what twin_result measured (None: nothing).
    """

    sample: Sample = lambda cfg, n: None
    twin: Callable[[Runner], Runner] | None = None
    twin_result: TwinResult | None = None
    gate_names: tuple[str, ...] = ()
    describe: Describe | None = None
