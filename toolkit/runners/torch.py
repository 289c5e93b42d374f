"""PyTorch models saved with ``torch.export.save`` (``.pt2``), run eagerly by PyTorch: the reference a PyTorch
model's exported files are judged against (the ``[torch]`` extra).

Why ``.pt2`` (an ``ExportedProgram``) and not a pickled ``.pt``: ``torch.load`` of a whole module unpickles
arbitrary Python objects, and a TorchScript file ties the model to a deprecated compiler. An ExportedProgram is a
graph of ATen operators (JSON) plus raw tensor bytes, run without any of the user's Python code. Its loader still
unpickles a payload the archive marks as pickled (tensor subclasses, legacy archives): such archives are refused
before ``torch.export.load`` reads them.
"""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path

import numpy as np

from toolkit.errors import DataError, first_line, whole_message
from toolkit.runners import RUNTIMES, Runtime
from toolkit.runners.base import Runner, TensorSpec

_LEGACY = ("serialized_state_dict.pt", "serialized_constants.pt", "serialized_exported_program.json")


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def check_archive(path: Path) -> None:
    """A DataError unless ``path`` is a ``torch.export.save`` archive that holds no pickled payload."""
    if not path.is_file():
        raise DataError(f"model file {path} not found")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a torch.export archive (not a zip file: a pickled .pt?)",
                        hint="save the model with torch.export.save(torch.export.export(model, (example,)), "
                        "'model.pt2')")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if any(n.rsplit("/", 1)[-1] in _LEGACY for n in names) or any(
                "/data/weights/" in n and n.endswith(".pt") for n in names):
            raise DataError(f"{path} is a legacy torch.export archive whose weights are pickled; refusing to unpickle "
                            "it", hint="save it again with torch.export.save from PyTorch 2.6 or newer")
        configs = [n for n in names if n.endswith(("model_weights_config.json", "model_constants_config.json"))]
        if not configs:
            raise DataError(f"{path} is not a torch.export archive (no weights config)",
                            hint="save the model with torch.export.save")
        for name in configs:
            try:
                config = json.loads(archive.read(name)).get("config", {})
            except (ValueError, AttributeError):
                raise DataError(f"{path}: {name} is not valid JSON") from None
            pickled = [fqn for fqn, meta in config.items() if isinstance(meta, dict) and meta.get("use_pickle")]
            if pickled:
                raise DataError(f"{path} holds pickled tensors ({', '.join(pickled[:3])}); refusing to unpickle them",
                                hint="export the model with plain torch.Tensor weights and buffers")


def load_program(path: Path):
    """The ExportedProgram in a .pt2 archive, checked first (check_archive)."""
    path = Path(path)
    check_archive(path)
    import torch

    try:
        return torch.export.load(str(path))
    except Exception as exc:  # torch raises many types
        raise DataError(f"cannot load {path}: {type(exc).__name__}: {first_line(exc)}",
                        detail=whole_message(exc)) from None


def input_shape(program) -> tuple:
    """The user input's shape, symbolic dimensions as None."""
    signature = program.graph_signature
    if len(signature.user_inputs) != 1 or len(signature.user_outputs) != 1:
        raise DataError(f"the program has {len(signature.user_inputs)} input(s) and {len(signature.user_outputs)} "
                        "output(s); the toolkit checks image classifiers with one input and one output")
    node = next(n for n in program.graph.nodes if n.name == signature.user_inputs[0])
    value = node.meta.get("val")
    if value is None or not hasattr(value, "shape"):
        raise DataError("the program's input is not a tensor")
    return tuple(int(d) if str(d).lstrip("-").isdigit() else None for d in value.shape)


class TorchRunner(Runner):
    name = "torch"
    _lock = threading.Lock()  # one eager module shared across threads: serialised

    def __init__(self, program, path: Path | None = None, threads: int | None = None):
        import torch

        self.program = program
        self.path = path
        self.module = program.module()
        self.threads = threads
        shape = input_shape(program)
        if shape[0] is not None:
            raise DataError(f"{path or 'the program'} was exported with a fixed batch of {shape[0]}",
                            hint="export with a dynamic batch: torch.export.export(model, (x,), dynamic_shapes="
                            "({0: torch.export.Dim('batch')},))")
        self.input_spec = TensorSpec("input", shape, "float32")
        probe = np.zeros((2, *[d or 1 for d in shape[1:]]), np.float32)
        with torch.no_grad():
            out = self.module(torch.from_numpy(probe))
        if not isinstance(out, torch.Tensor):
            raise DataError(f"{path or 'the program'} returns {type(out).__name__}, not one tensor of scores")
        self.output_spec = TensorSpec("output", (None, *tuple(out.shape[1:])), "float32")

    @classmethod
    def load(cls, path: Path, **kwargs) -> TorchRunner:
        return cls(load_program(path), path=Path(path), **kwargs)

    def prepare(self, images: np.ndarray):
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.arrange(images), dtype=np.float32))

    def run_raw(self, x):
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        with torch.no_grad():
            return self.module(x).numpy()

    def bench_fields(self) -> dict:
        import torch

        return {"graph": "torch.export program, eager (ExportedProgram.module())", "torch_version": torch.__version__}


def _open(path: Path, *, device: str = "cpu", threads: int | None = None) -> TorchRunner:
    return TorchRunner.load(path, threads=threads)


RUNTIMES.register(Runtime(
    name="torch",
    formats=("torch",),
    devices=("cpu",),
    summary="a PyTorch model (.pt2) run eagerly by PyTorch on the CPU: the reference its exports are judged against",
    open=_open,
    unavailable=lambda device: None if available() else "PyTorch is not installed (pip install -e '.[torch]')",
    default_for=("torch",),
    timed_call="ExportedProgram.module()(tensor) under torch.no_grad()",
    other_devices="the reference runs on the CPU (PyTorch's CUDA build is not what this project installs)",
    order=45,
))
