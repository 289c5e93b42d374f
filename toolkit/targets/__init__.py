"""Deployment targets beyond the host: an accelerator that compiles a model for itself and estimates what it
costs there (Arm's Ethos-U microNPUs through Vela: toolkit/targets/ethosu.py). One module per target family,
registering its named configurations next to its code (``TARGETS.register``), found by scanning, as the
formats, runtimes and dataset sources are.

What a target gives for one integer ``.tflite`` file (``Target.analyse``): which operators run on the
accelerator and which fall back to the CPU with the compiler's reason, the memory it uses, its estimated
time per inference, and the compiled file. Every figure is the compiler's *estimate*, labelled so: nothing
here runs on the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from toolkit.plugins import Registry


class Analyse(Protocol):
    def __call__(self, target: Target, model: Path, workdir: Path, /) -> dict: ...


@dataclass(frozen=True)
class Target:
    """One named configuration of an accelerator (``ethos-u55-128``): how its compiler is asked, what it is."""

    name: str
    family: str  # "ethos-u"
    description: str  # one line: the accelerator, its MACs, the system and memory configuration
    analyse: Analyse
    extra: str  # the pip extra that installs its compiler
    reads: str = ""  # the format of the files its compiler takes (full-integer ones)
    settings: dict = field(default_factory=dict)  # the compiler's options for this configuration
    default: bool = True  # in the representative set `--npu` with no name analyses
    order: int = 100
    missing: Callable[[], str | None] = lambda: None  # what to install when its compiler is absent, else None

    def __hash__(self) -> int:
        return hash(self.name)


TARGETS: Registry[Target] = Registry("target", __name__, key=lambda t: t.name, order=lambda t: (t.order, t.name),
                                     group="toolkit.targets")


def defaults() -> list[str]:
    """The representative configurations `--npu` with no name analyses."""
    return [name for name, t in TARGETS.load_all().items() if t.default]


def check_available(names: list[str]) -> None:
    """Every named target known and its compiler installed, before any work (UsageError, else exit 6)."""
    for name in names:
        target = TARGETS.get(name)
        hint = target.missing()
        if hint is not None:
            from toolkit.errors import DeviceUnavailableError

            raise DeviceUnavailableError(f"{name} needs its compiler, which is not installed", hint=hint)


def analyse_export(exports, manifest, names: list[str], log=lambda line: None) -> dict:
    """Each named target on each full-integer TFLite file of an export: ``{"targets": [...], "rows": [...],
    "not_analysed": [...]}``; a file a target cannot take gets one line under ``not_analysed`` (float and
    dynamic-range files: the NPU computes integers only; ONNX and OpenVINO files: Vela reads TFLite), and the
    compiled files are written beside footprint.json (``ExportDir.npu_compiled_path``)."""
    from toolkit.artifacts import atomic_write_bytes

    targets = [TARGETS.get(name) for name in names]
    reads = {t.reads for t in targets}
    by_sha = {e["sha256"]: e["variant"] for e in manifest["artifacts"] if e["format"] in reads}
    rows, skipped, analysable = [], [], []
    for entry in manifest["artifacts"]:
        variant = entry["variant"]
        if entry.get("model_sha256") in by_sha:  # tflite-micro: the same model bytes as a .tflite variant
            skipped.append({"variant": variant, "reason": f"the same model bytes as {by_sha[entry['model_sha256']]}: "
                                                          "see its rows"})
        elif entry["format"] not in reads:
            skipped.append({"variant": variant, "reason": f"a {entry['format']} file: the NPU compiler takes "
                                                          f"{' and '.join(sorted(reads))} files"})
        elif entry.get("quantization") != "int8":
            kind = {"none": "float32", "fp16": "float16 weights", "dynamic": "dynamic range: float activations"}.get(
                entry.get("quantization"), entry.get("quantization"))
            skipped.append({"variant": variant, "reason": f"{kind}: the NPU computes integers only (a full-integer "
                                                          "int8 file is what it takes)"})
        else:
            analysable.append(entry)
    if not analysable:
        from toolkit.errors import UsageError

        raise UsageError("no full-integer TFLite variant to compile for the NPU: " + "; ".join(
            f"{s['variant']}: {s['reason']}" for s in skipped), hint="export one with `toolkit export --format tflite`")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="toolkit-npu-") as work:
        for entry in analysable:
            path = exports.verified(entry)
            for target in targets:
                log(f"  {target.name}: compiling {entry['variant']} with {target.family}'s compiler")
                record = target.analyse(target, path, Path(work))
                compiled = exports.npu_compiled_path(target.name, entry["variant"])
                atomic_write_bytes(compiled, record.pop("_compiled_content"))
                record["compiled"]["path"] = str(compiled.relative_to(exports.root))
                rows.append({"variant": entry["variant"], "source_sha256": entry["sha256"], **record})
    return {"targets": [{"name": t.name, "family": t.family, "description": t.description, **t.settings}
                        for t in targets], "rows": rows, "not_analysed": skipped}


def manifest_rows(names: tuple[str, ...], fmt: str, quantization: str, path: Path) -> list[dict] | None:
    """What the manifest records of one exported file for the NPU configurations ``names`` (`export --npu`):
    per configuration whose compiler takes this format, the operators on the NPU and the CPU (with the
    compiler's reasons), memory, the estimated time and the compiled file (``compiled_content``, for the caller
    to write); None when no named configuration takes this file."""
    if quantization != "int8":
        return None
    targets = [t for t in (TARGETS.get(n) for n in names) if t.reads == fmt]
    if not targets:
        return None
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="toolkit-npu-") as work:
        for target in targets:
            r = target.analyse(target, path, Path(work) / target.name)
            rows.append({k: r[k] for k in ("target", "estimate", "time_covers", "compiler", "operators", "cpu_fallbacks",
                                           "sram_kib",
                                           "off_chip_flash_kib", "on_chip_flash_kib", "dram_kib", "inference_ms",
                                           "inferences_per_second", "macs")}
                        | {"compiled_sha256": r["compiled"]["sha256"], "compiled_content": r["_compiled_content"]})
    return rows
