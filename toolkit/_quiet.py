"""Import TensorFlow (and friends) without the log flood they print at import time.

TensorFlow writes absl/oneDNN/CUDA-stub lines straight to file descriptor 2 before its
own logging is configured, so TF_CPP_MIN_LOG_LEVEL alone does not silence them. We point
fd 2 at a temporary file for the duration of the import and replay what was captured only
if the import fails (so a broken install still shows its real error).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from types import ModuleType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@contextlib.contextmanager
def quiet_stderr():
    """Silence fd 2 (C++ logging included); replay it if the body raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def captured_stderr():
    """Capture what C/C++ code writes to fd 2; the text is in ``result["text"]`` afterwards."""
    result = {"text": ""}
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield result
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            result["text"] = tmp.read().decode(errors="replace")


def quiet_import(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    with quiet_stderr():
        module = importlib.import_module(name)
        if name == "tensorflow" or (name == "keras" and os.environ.get("KERAS_BACKEND") == "tensorflow"):
            tf = importlib.import_module("tensorflow")
            tf.get_logger().setLevel("ERROR")
            with contextlib.suppress(Exception):
                tf.autograph.set_verbosity(0)
    return module


def tf():
    return quiet_import("tensorflow")


def keras():
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow" and "keras" not in sys.modules:
        tf()  # import TensorFlow quietly first: Keras would import it loudly
    return quiet_import("keras")
