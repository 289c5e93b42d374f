"""What produced a result: versions, git commit, machine, time. Recorded in every JSON file."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from toolkit import __version__

_PACKAGES = (
    "tensorflow",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "ai-edge-litert",
    "ai-edge-quantizer",
    "tflite-micro",
    "openvino",
    "pillow",
    "numpy",
    "jax",
    "jaxlib",
    "jax-cuda13-plugin",
    # CUDA libraries as pip packages (GPU machines)
    "nvidia-cuda-runtime",
    "nvidia-cudnn-cu13",
    "nvidia-cublas",
)


def package_version(name: str) -> str | None:
    """An installed distribution's version, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "toolkit": __version__}
    versions.update({name: v for name in _PACKAGES if (v := package_version(name)) is not None})
    return versions


def git_commit() -> str | None:
    """The commit of the toolkit's source tree, with '-dirty' if it has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        # Changes to committed benchmark outputs are results, not code: they do not make it dirty.
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".",
             ":(exclude)benchmarks/results", ":(exclude)benchmarks/*.md", ":(exclude)exports"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> list[str]:
    """The CPU's feature flags as the kernel reports them (/proc/cpuinfo), [] where unknown."""
    return sorted((_cpuinfo_field("flags") or "").split())


# The features that change which kernels the runtimes pick (and so their speed, and for OpenVINO the
# precision it computes float models in): the flags behind each, as /proc/cpuinfo names them.
_FEATURES = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "avx512_vnni": ("avx512_vnni",),
    "avx_vnni": ("avx_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "amx": ("amx_tile", "amx_int8", "amx_bf16"),
}


def cpu_features(flags: list[str] | None = None) -> dict:
    """A short, readable summary of the features behind runtime choices: each is true only when
    every flag behind it was detected (never assumed). ``amx_flags`` lists the AMX flags seen."""
    flags = set(cpu_flags() if flags is None else flags)
    out = {name: all(f in flags for f in needs) for name, needs in _FEATURES.items()}
    out["amx_flags"] = sorted(f for f in flags if f.startswith("amx"))
    out["detected_from"] = "/proc/cpuinfo flags" if flags else "nothing (no /proc/cpuinfo): all false"
    return out


def cpu_description(m: dict) -> str:
    """One line for a table's caption: model, vendor and the features that matter, from a machine record."""
    feats = m.get("cpu_features") or {}
    shown = [name.replace("_", "-").upper() for name in ("amx", "avx512", "avx512_vnni", "avx512_bf16", "avx_vnni")
             if feats.get(name)]
    vendor = m.get("cpu_vendor")
    if feats and not feats.get("amx"):
        shown.append("no AMX")
    if feats and not feats.get("avx512"):
        shown.append("no AVX-512")
    return f"{m.get('cpu', 'unknown CPU')}" + (f" ({vendor})" if vendor else "") + (f", {', '.join(shown)}" if shown else "")


def machine() -> dict:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_vendor": _cpuinfo_field("vendor_id"),
        "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "python_executable": sys.executable,
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def provenance() -> dict:
    return {
        "created": now_iso(),
        "git_commit": git_commit(),
        "versions": library_versions(),
        "machine": machine(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
