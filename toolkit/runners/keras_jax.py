"""The reference ``.keras`` model under Keras' JAX backend, compiled with ``jax.jit``: on the GPU
when JAX sees one, on the CPU otherwise. It exists so that the reference can be timed (and
checked) on a GPU machine that has no TensorFlow, beside the exports on the same GPU.

Keras picks its backend once per process, at its first import. Where Keras is not imported yet
(a bench worker, a GPU machine run with ``KERAS_BACKEND=jax``) the model runs in this process.
Where Keras is already loaded with another backend (parity on a TensorFlow machine, which loads
the TensorFlow reference first), the model runs in a child process that imports Keras with the
JAX backend, and arrays go over a pipe; ``bench_fields`` says which, and bench never times a
model through that pipe (its workers are fresh processes, so it does not arise there).

The jitted function is ``model.stateless_call`` with the weights as arguments (Keras' documented
way to use a model inside ``jax.jit``), never ``model.predict``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np

from toolkit.errors import DataError, DeviceUnavailableError
from toolkit.runners import RUNTIMES, Runtime
from toolkit.runners.base import Runner, TensorSpec


def _keras_backend_loaded() -> str | None:
    """The backend of the Keras already imported in this process, or None."""
    if "keras" not in sys.modules:
        return None
    try:
        return sys.modules["keras"].backend.backend()
    except AttributeError:  # partially imported
        return None


def _jax_device(device: str):
    import jax

    if device == "cuda":
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            raise DeviceUnavailableError("JAX sees no GPU (jax.devices() holds no gpu device)",
                                         hint="install jax[cuda13] on a CUDA machine")
        return gpus[0]
    return jax.devices("cpu")[0]


class _InProcess:
    """The model, its weights on the device, and one jitted stateless call."""

    def __init__(self, path: Path, device: str, precision: str = "highest"):
        os.environ["KERAS_BACKEND"] = "jax"  # before Keras' first import in this process
        import jax

        from toolkit.runners.keras import load_keras_model

        self.jax_device = _jax_device(device)
        with jax.default_device(self.jax_device):
            self.model = load_keras_model(path)
            model = self.model
            trainable = [jax.device_put(v.value, self.jax_device) for v in model.trainable_variables]
            frozen = [jax.device_put(v.value, self.jax_device) for v in model.non_trainable_variables]

        def call(trainable, frozen, x):
            # XLA on a GPU computes float32 convolutions and matrix products in TF32 by default;
            # "highest" keeps float32 (precision is fixed when the function is traced)
            with jax.default_matmul_precision(precision):
                y, _ = model.stateless_call(trainable, frozen, x, training=False)
            return y

        jitted = jax.jit(call)
        self.fn = lambda x: jitted(trainable, frozen, x)
        shape = tuple(model.inputs[0].shape)
        self.input_spec = TensorSpec(model.inputs[0].name, shape, "float32")
        self.output_spec = TensorSpec(model.outputs[0].name, tuple(model.outputs[0].shape), "float32")
        self.platform = self.jax_device.platform  # "gpu" or "cpu"
        self.described = f"{self.jax_device.platform}:{self.jax_device.id} ({self.jax_device.device_kind})"

    def prepare(self, images: np.ndarray):
        import jax

        return jax.device_put(np.ascontiguousarray(images, dtype=np.float32), self.jax_device)

    def run_raw(self, x) -> np.ndarray:
        return np.asarray(self.fn(x))  # blocks until the device is done, like every runtime's call


def _child(conn, path: str, device: str, precision: str) -> None:
    """A process of its own with Keras on the JAX backend: load, then answer batches until None."""
    try:
        model = _InProcess(Path(path), device, precision)
        conn.send(("ok", {"input": model.input_spec, "output": model.output_spec, "platform": model.platform,
                          "described": model.described}))
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it as its own error
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        x = conn.recv()
        if x is None:
            return
        try:
            conn.send(("ok", model.run_raw(model.prepare(x))))
        except Exception as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _ChildProcess:
    """The same model in a spawned child with the JAX backend (this process's Keras has another)."""

    def __init__(self, path: Path, device: str, precision: str):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        saved = os.environ.get("KERAS_BACKEND")
        os.environ["KERAS_BACKEND"] = "jax"  # the child inherits it at spawn
        try:
            self.process = ctx.Process(target=_child, args=(child_conn, str(path), device, precision),
                                       daemon=True)
            self.process.start()
        finally:
            if saved is None:
                os.environ.pop("KERAS_BACKEND", None)
            else:
                os.environ["KERAS_BACKEND"] = saved
        child_conn.close()
        info = self._receive()
        self.input_spec, self.output_spec = info["input"], info["output"]
        self.platform, self.described = info["platform"], info["described"]
        self.model = None

    def _receive(self):
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise DataError(f"keras-jax: the JAX worker process ended (exit code {self.process.exitcode})") from None
        if status != "ok":
            raise DataError(f"keras-jax: {value}")
        return value

    def prepare(self, images: np.ndarray):
        return np.ascontiguousarray(images, dtype=np.float32)

    def run_raw(self, x) -> np.ndarray:
        self.conn.send(x)
        return self._receive()

    def close(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self.conn.send(None)
            self.process.join(timeout=10)
            if self.process.is_alive():
                self.process.kill()

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


class KerasJaxRunner(Runner):
    name = "keras-jax"

    def __init__(self, path: Path, device: str = "cpu", precision: str = "highest"):
        path = Path(path)
        if not path.is_file():
            raise DataError(f"model file {path} not found")
        self.device = device
        self.precision = precision
        loaded = _keras_backend_loaded()
        impl = _InProcess if loaded in (None, "jax") else _ChildProcess
        self._impl = impl(path, device, precision)
        self.in_process = isinstance(self._impl, _InProcess)
        self.model = self._impl.model  # None in a child process
        self.input_spec = self._impl.input_spec
        self.output_spec = self._impl.output_spec

    @classmethod
    def load(cls, path: Path, **kwargs) -> KerasJaxRunner:
        return cls(path, **kwargs)

    def prepare(self, images: np.ndarray):
        """On the runner's device (jax.device_put), so the timed call copies nothing in."""
        return self._impl.prepare(images)

    def run_raw(self, x) -> np.ndarray:
        return self._impl.run_raw(x)

    @property
    def providers(self) -> list[str]:
        return [f"jax {self._impl.described}"]

    def used_device(self) -> str:
        return "cuda" if self._impl.platform == "gpu" else "cpu"

    def bench_fields(self) -> dict:
        return {"graph": "jax.jit(model.stateless_call) (not model.predict)",
                "inference_precision": "fp32" if self.precision == "highest" else
                ("tf32" if self.used_device() == "cuda" else "fp32 (the CPU has no TF32)"),
                "jax_matmul_precision": self.precision,
                **({"xla_flags": os.environ["XLA_FLAGS"]} if os.environ.get("XLA_FLAGS") and self.in_process else {}),
                "process": "this process" if self.in_process else
                "a child process with the JAX backend (this process's Keras uses another backend)"}


def _unavailable(device: str) -> str | None:
    try:
        import jax
    except ImportError:
        return "JAX is not installed (pip install 'toolkit[jax]')"
    if device == "cuda" and not any(d.platform == "gpu" for d in jax.devices()):
        return "JAX sees no GPU (jax.devices() holds no gpu device; install jax[cuda13] on a CUDA machine)"
    return None


def _open(path: Path, *, device: str = "cpu", threads: int | None = None) -> KerasJaxRunner:
    if device == "cpu" and threads == 1 and "jax" not in sys.modules:
        # XLA's CPU client sizes its thread pool when JAX starts: one thread is the recipe JAX documents
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()
    return KerasJaxRunner.load(path, device=device)


def _open_tf32(path: Path, *, device: str = "cuda", threads: int | None = None) -> KerasJaxRunner:
    return KerasJaxRunner.load(path, device=device, precision="default")


RUNTIMES.register(Runtime(
    name="keras-jax",
    formats=("keras",),
    devices=("cpu", "cuda"),
    summary="the Keras reference model under Keras' JAX backend, jax.jit-compiled (GPU machines without TensorFlow)",
    open=_open,
    unavailable=_unavailable,
    in_default_set=False,
    timed_call="jax.jit(model.stateless_call)(...) on a device array, copied back to the host",
    order=45,
    linestyle=(0, (4, 1, 1, 1)),
))

RUNTIMES.register(Runtime(
    name="keras-jax-tf32",
    formats=("keras",),
    devices=("cuda",),
    summary="keras-jax with XLA's default GPU precision: TF32 tensor cores for float32 convolutions and matmuls",
    open=_open_tf32,
    unavailable=_unavailable,
    in_default_set=False,
    reduced_precision="tf32",
    other_devices="TF32 is a CUDA tensor-core mode",
    timed_call="jax.jit(model.stateless_call)(...) on a device array, copied back to the host",
    order=46,
    linestyle=(0, (4, 1, 1, 1, 1, 1)),
))
