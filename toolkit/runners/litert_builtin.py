"""LiteRT without the XNNPACK delegate: the interpreter's own builtin kernels (ruy/gemmlowp), as a
TFLite model runs where XNNPACK is disabled or has no kernel. Users compare it with ``litert``
to see what the delegate is worth. This module is the whole runtime: nothing else names it."""

from __future__ import annotations

from pathlib import Path

from toolkit.runners import RUNTIMES, Runtime
from toolkit.runners.litert import LiteRTRunner


def _open(path: Path, *, device: str = "cpu", threads: int | None = None) -> LiteRTRunner:
    return LiteRTRunner.load(path, threads=threads, resolver="BUILTIN_WITHOUT_DEFAULT_DELEGATES")


RUNTIMES.register(Runtime(
    name="litert-builtin",
    linestyle=(0, (1, 1)),
    formats=("tflite",),
    devices=("cpu",),
    summary="the LiteRT interpreter without XNNPACK: its builtin kernels",
    open=_open,
    in_default_set=False,
    timed_call="set_tensor + invoke + get_tensor",
    other_devices="the ai-edge-litert wheel ships no GPU delegate for Linux",
    order=11,
))
