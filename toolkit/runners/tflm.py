"""The full-integer model under TensorFlow Lite for Microcontrollers (host build).

Loaded from the generated C source: the runner parses the array back, so parity checks the
bytes a device would be flashed with. TFLM's host build runs reference kernels one image at
a time; its latency is no estimate of a device's.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from toolkit import tflm as micro
from toolkit.errors import DataError
from toolkit.runners import RUNTIMES, Runtime
from toolkit.runners.base import ParityHooks, Runner, TensorSpec


def _spec(detail: dict, name: str) -> TensorSpec:
    q = detail.get("quantization_parameters", {})
    scales, zps = q.get("scales", []), q.get("zero_points", [])
    return TensorSpec(
        name=name,
        shape=tuple(int(s) for s in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scales[0]) if len(scales) else None,
        zero_point=int(zps[0]) if len(zps) else None,
    )


class TFLMRunner(Runner):
    name = "tflm"

    def __init__(self, content: bytes, path: Path | None = None):
        self.content = content
        self.path = path
        self.interpreter = micro.interpreter(content)
        self._in = self.interpreter.get_input_details(0)
        self._out = self.interpreter.get_output_details(0)
        self.input_spec = _spec(self._in, "input")
        self.output_spec = _spec(self._out, "output")
        if self.input_spec.scale is None or self.output_spec.scale is None:
            raise DataError(f"{path}: TFLM runner expects a full-integer model with quantized input and output")
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, **kwargs) -> TFLMRunner:
        path = Path(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {path} as C source: {exc}") from None
        return cls(micro.parse_c_array(text), path=path)

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """One image (batch of 1) already in the model's dtype."""
        self.interpreter.set_input(x, 0)
        self.interpreter.invoke()
        return self.interpreter.get_output(0)

    def _run_prepared(self, q: np.ndarray) -> np.ndarray:
        # TFLM models have a fixed batch of one (the shared input check ignores the batch
        # dimension): feed the images one by one.
        with self._lock:
            return np.concatenate([self.run_raw(q[i : i + 1]) for i in range(len(q))])

    @property
    def providers(self) -> list[str]:
        return ["TFLM reference kernels"]

    def op_names(self) -> list[str]:
        from toolkit.runners.litert import LiteRTRunner

        return LiteRTRunner(self.content).op_names()


def _open(path: Path, *, device: str = "cpu", threads: int | None = None) -> TFLMRunner:
    return TFLMRunner.load(path)


def _sample(cfg, n: int) -> np.ndarray | None:
    """TFLM's host build runs reference kernels one image at a time (milliseconds each for the
    CNN), so by default it sees a fixed-seed sample of the test set; --micro-images all: every image."""
    if cfg.micro_images is None or cfg.micro_images >= n:
        return None
    return np.sort(np.random.default_rng(cfg.seed).choice(n, size=cfg.micro_images, replace=False))


def _litert_twin(runner: TFLMRunner) -> Runner:
    """The same model bytes on the desktop LiteRT interpreter: do TFLM's kernels agree?"""
    from toolkit.runners.litert import LiteRTRunner

    return LiteRTRunner(runner.content)


def _twin_result(same: np.ndarray, max_abs_diff: float, sample: np.ndarray | None, n: int, cfg) -> tuple[dict, list]:
    """TFLM against LiteRT on the same model bytes: the sound check of a sample (tflite-int8 carries the
    full-set gates)."""
    from toolkit.verdicts import agreement_between

    metrics = {
        "images_used": "all" if sample is None else f"fixed-seed sample of {len(sample)} of {n} (seed {cfg.seed})",
        "agreement_with_litert": float(same.mean()),
        "disagreements_with_litert": int((~same).sum()),
        "max_abs_logit_diff_vs_litert": max_abs_diff,
    }
    gate = agreement_between("agreement_with_litert_percent", int(same.sum()), len(same),
                             cfg.gates.micro_min_agreement_with_litert, note="TFLM against LiteRT on the same model bytes")
    return metrics, [gate]


def _describe(name: str, m: dict, scores: str) -> str | None:
    if "agreement_with_litert" not in m:
        return None
    return (f"`{name}` ran under TFLM on {m['images_used']} test images (`--micro-images`); "
            f"its predictions agree with the LiteRT interpreter's on the same model bytes for "
            f"{m['agreement_with_litert']:.2%} of them ({m['disagreements_with_litert']} disagreements, "
            f"max abs {scores} difference {m['max_abs_logit_diff_vs_litert']:.3g}).")


RUNTIMES.register(Runtime(
    name="tflm",
    linestyle=(0, (1, 2)),
    formats=("tflite-micro",),
    devices=("cpu",),
    summary="TensorFlow Lite for Microcontrollers, host build (the [micro] extra)",
    open=_open,
    unavailable=lambda device: None if micro.available() else f"TFLM is not installed ({micro.INSTALL_HINT})",
    default_for=("tflite-micro",),
    batch_sizes=(1,),
    threads=(1,),
    note="TFLM host build, reference kernels, batch 1, one thread: not a device timing",
    other_devices="TFLM is a microcontroller runtime; its host build runs on the CPU only",
    timed_call="set_input + invoke + get_output",
    order=30,
    parity=ParityHooks(sample=_sample, twin=_litert_twin, twin_result=_twin_result,
                       gate_names=("agreement_with_litert_percent",), describe=_describe),
    gate_retimes=False,
))
