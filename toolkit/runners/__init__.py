"""Runtimes as plugins: one module per runtime in this package, each registering a ``Runtime``
next to its code (``RUNTIMES.register(Runtime(...))``), found by scanning the package, plus third-party
modules named by the ``toolkit.runtimes`` entry-point group. Adding a runtime is adding a module.

A runtime declares its name, the artifact formats it runs, the devices it can use and why not
(``unavailable(device)``), and ``open(path, device=, threads=)`` returning a ``Runner``: the
public ``infer`` checks inputs and returns float32 scores; ``prepare`` puts images in the model's
dtype; ``run_raw`` is the call the bench timer wraps; ``providers`` says what really ran.

Like Polygraphy's runners: the public ``infer`` checks the input (shape, dtype, NaN/Inf) and the
base class does the rest (``prepare``, ``run_raw``, dequantize); subclasses write ``run_raw`` and, where
their model's dtype is not float32, ``prepare``. Quantized models take float images and return float
scores: the runner quantizes inputs and dequantizes outputs with the tensors' own scale and zero point,
so parity compares like with like. An unknown runtime or format is an error naming the known
ones, never a fall-through to a default.

The registry is ``RUNTIMES`` (a ``toolkit.plugins.Registry``): ``RUNTIMES.register(Runtime(...))`` in a
runtime's module, ``get``, ``names`` and ``load_all`` everywhere else (also as this module's functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from toolkit.errors import UsageError
from toolkit.plugins import Registry
from toolkit.runners.base import ParityHooks, Runner, TensorSpec

ENTRY_POINT_GROUP = "toolkit.runtimes"


class Opener(Protocol):
    """``Runtime.open``: the artifact at ``path`` loaded for ``device`` with ``threads`` (None: the runtime's
    default); raises DataError when the file is unusable, DeviceUnavailableError when the device is."""

    def __call__(self, path: Path, *, device: str = "cpu", threads: int | None = None) -> Runner: ...


class Unavailable(Protocol):
    """``Runtime.unavailable``: None if the runtime can run on ``device`` here, else the reason."""

    def __call__(self, device: str, /) -> str | None: ...


@dataclass(frozen=True)
class Runtime:
    name: str
    formats: tuple[str, ...]  # artifact formats it runs ("tflite", "onnx", "keras", "tflite-micro", ...)
    devices: tuple[str, ...]  # "cpu", "cuda"
    summary: str  # one line for --help and the docs
    open: Opener
    unavailable: Unavailable = lambda device: None  # why it cannot run on device here
    default_for: tuple[str, ...] = ()  # formats it is the reference runtime of (parity, export checks)
    in_default_set: bool = True  # bench/parity use it when --runtimes is not given
    # in bench's default set only where it can run here (e.g. OpenVINO's bf16 default, on CPUs with bf16);
    # elsewhere it is left out of the plan with one line saying why, instead of a skipped row per variant
    default_where_available: bool = False
    batch_sizes: tuple[int, ...] | None = None  # the only batch sizes it runs (TFLM: 1), else any
    threads: tuple[int, ...] | None = None  # the only thread counts it runs (TFLM: 1), else any
    reduced_precision: str | None = None  # computes float models in lower precision (e.g. "bf16")
    note: str | None = None  # said beside every bench row (e.g. "host reference kernels")
    timed_call: str = "run_raw"  # what the bench timer wraps, in the runtime's own words
    other_devices: str | None = None  # why it does not run on the devices it lacks
    order: int = 100  # position in tables
    linestyle: str | tuple | None = None  # its line style in every plot (toolkit/style.py), else one from its name
    parity: ParityHooks = ParityHooks()  # what parity does differently for it (TFLM: a sample, a LiteRT twin, a gate)
    # `toolkit gate` re-times a shipped int8 variant on its reference runtime by default; False where timings on this
    # machine say nothing of the target (TFLM's host build of reference kernels)
    gate_retimes: bool = True

    def load(self, path: Path, **kwargs) -> Runner:
        """The artifact opened in this runtime; the runner carries the runtime's name (so modules that
        register several runtimes on one runner class need not rename it)."""
        runner = self.open(Path(path), **kwargs)
        runner.name = self.name
        return runner

    def why_not(self, device: str) -> str | None:
        """None if it can run on ``device`` here, else the reason."""
        if device not in self.devices:
            return (f"{self.name} runs on {' and '.join(self.devices)} only"
                    + (f": {self.other_devices}" if self.other_devices else ""))
        return self.unavailable(device)


RUNTIMES: Registry[Runtime] = Registry("runtime", __name__, key=lambda r: r.name, order=lambda r: (r.order, r.name),
                                       group=ENTRY_POINT_GROUP)
# the registry's methods as this module's functions (what callers and third-party runtimes have used)
register, get, names, load_all = RUNTIMES.register, RUNTIMES.get, RUNTIMES.names, RUNTIMES.load_all


def for_format(fmt: str) -> list[Runtime]:
    return [r for r in load_all().values() if fmt in r.formats]


def default_for(fmt: str) -> Runtime:
    """The reference runtime of an artifact format (parity's default, export's check)."""
    found = [r for r in load_all().values() if fmt in r.default_for]
    if not found:
        raise UsageError(f"no runtime runs format {fmt!r} (runtimes: "
                         + "; ".join(f"{r.name}: {', '.join(r.formats)}" for r in load_all().values()) + ")")
    return found[0]


def runner_for(fmt: str, path: Path, **kwargs) -> Runner:
    """The artifact at ``path`` loaded in its format's reference runtime."""
    return default_for(fmt).load(path, **kwargs)


__all__ = ["RUNTIMES", "Opener", "ParityHooks", "Runner", "Runtime", "TensorSpec", "Unavailable", "default_for",
           "for_format", "get", "load_all", "names", "register", "runner_for"]
