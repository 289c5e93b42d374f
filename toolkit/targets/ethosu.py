"""Arm Ethos-U microNPUs (U55, U65, U85) through Arm's Vela compiler (``ethos-u-vela``, the ``[npu]`` extra).

Vela takes a full-integer ``.tflite`` (int8, or int16x8), places each operator on the NPU or, when the NPU
cannot take it, on the Cortex-M CPU (with the constraint it fails, which this module keeps word for word),
compiles the NPU part into a command stream inside an optimised ``.tflite``, and estimates from its
performance model the cycles, time per inference and memory traffic of one inference.

Every configuration states what Vela is asked (accelerator, ``--system-config`` and ``--memory-mode`` from
the ``vela.ini`` Vela ships), so its figures are never the "may be invalid or non-optimal" defaults; the
representative set follows Arm MLIA's target profiles. The figures are Vela's **estimates**; nothing runs
on an NPU here, and the compiled file runs only with the Ethos-U driver.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from toolkit.errors import DataError, DeviceUnavailableError, first_line
from toolkit.targets import TARGETS, Target

# (name, Vela accelerator, system config, memory mode, in the default set, description)
CONFIGURATIONS = (
    ("ethos-u55-128", "ethos-u55-128", "Ethos_U55_High_End_Embedded", "Shared_Sram", True,
     "Ethos-U55, 128 MACs/cycle, 500 MHz, SRAM shared with the Cortex-M, weights in off-chip flash"),
    ("ethos-u55-256", "ethos-u55-256", "Ethos_U55_High_End_Embedded", "Shared_Sram", False,
     "Ethos-U55, 256 MACs/cycle, 500 MHz, SRAM shared with the Cortex-M, weights in off-chip flash"),
    ("ethos-u65-256", "ethos-u65-256", "Ethos_U65_High_End", "Dedicated_Sram", True,
     "Ethos-U65, 256 MACs/cycle, 1 GHz, dedicated SRAM as a cache, weights and arena in DRAM"),
    ("ethos-u65-512", "ethos-u65-512", "Ethos_U65_High_End", "Dedicated_Sram", False,
     "Ethos-U65, 512 MACs/cycle, 1 GHz, dedicated SRAM as a cache, weights and arena in DRAM"),
    ("ethos-u85-256", "ethos-u85-256", "Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram_384KB", True,
     "Ethos-U85, 256 MACs/cycle, 1 GHz, 384 KB dedicated SRAM, weights and arena in DRAM"),
)
INSTALL = "pip install -e '.[npu]'  (or: pip install ethos-u-vela)"
TIMEOUT_S = 600


def vela_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("ethos-u-vela")
    except Exception:  # not installed
        return None


def vela_ini() -> Path:
    """Arm's vela.ini, as Vela ships it (the system and memory configurations named above)."""
    import ethosu

    path = Path(next(iter(ethosu.__path__))) / "config_files" / "Arm" / "vela.ini"
    if not path.is_file():
        raise DeviceUnavailableError(f"Vela's configuration file {path} is missing", hint=INSTALL)
    return path


def vela_command(target: Target, model: Path, out: Path) -> list[str]:
    """The Vela command line this configuration runs (what a person runs by hand to check a figure)."""
    s = target.settings
    return [sys.executable, "-c", "import sys; from ethosu.vela.vela import main; sys.exit(main())", str(model),
            "--accelerator-config", s["accelerator"], "--config", str(vela_ini()), "--system-config",
            s["system_config"], "--memory-mode", s["memory_mode"], "--output-dir", str(out),
            "--verbose-performance"]


def _warnings(stdout: str) -> list[dict]:
    """Vela's supported-operator warnings: the operator, its output tensor, the constraint it fails. An operator
    warned about may still be folded away later (the shape arithmetic of a Flatten once Vela fixes the batch to
    1): the per-layer table, not this list, says what runs on the CPU."""
    out = []
    pattern = re.compile(r"^Warning \(supported operators\) operator: (\S+), ofm: '(.*)'\s*$")
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        match = pattern.match(line)
        if match:
            reason = [x.strip() for x in lines[i + 1 : i + 3] if x.strip() and not pattern.match(x)]
            out.append({"operator": match.group(1), "output": match.group(2),
                        "reason": " ".join(r.removeprefix("Reason: ") for r in reason)})
    return out


def _count(stdout: str, where: str) -> int | None:
    match = re.search(rf"^{where} operators = (\d+)", stdout, re.M)
    return int(match.group(1)) if match else None


def _number(row: dict, key: str) -> float:
    return float(row[key])


def analyse(target: Target, model: Path, workdir: Path) -> dict:
    """Vela on one full-integer .tflite for this configuration: operators on the NPU and the CPU (with Vela's
    reason for each fallback), memory, estimated time, MACs, the per-layer table and the compiled file."""
    if vela_version() is None:
        raise DeviceUnavailableError(f"the {target.name} estimate needs Arm's Vela compiler, which is not "
                                     "installed", hint=INSTALL)
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="toolkit-vela-", dir=workdir) as tmp:
        source = Path(tmp) / "model.tflite"  # Vela names its outputs after the input's stem
        source.write_bytes(Path(model).read_bytes())
        command = vela_command(target, source, Path(tmp) / "out")
        proc = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
        if proc.returncode != 0:
            raise DataError(f"{target.name}: Vela could not compile {Path(model).name}: "
                            f"{first_line(proc.stderr or proc.stdout)}")
        out = Path(tmp) / "out"
        summary_csv = out / f"model_summary_{target.settings['system_config']}.csv"
        with summary_csv.open(newline="") as f:
            summary = next(csv.DictReader(f))
        with (out / "model_per-layer.csv").open(newline="") as f:
            layers = [{"operator": r["Original Operator"], "as": r["NNG Operator"], "target": r["Target"],
                       "cycles": int(float(r["Op Cycles"])), "macs": int(float(r["MAC Count"])), "name": r["Name"]}
                      for r in csv.DictReader(f)]
        compiled = (out / "model_vela.tflite").read_bytes()
    npu, cpu = _count(proc.stdout, "NPU"), _count(proc.stdout, "CPU")
    warnings = _warnings(proc.stdout)
    reasons = {w["output"]: w["reason"] for w in warnings}
    on_cpu = [{"operator": r["operator"], "output": r["name"],
               "reason": reasons.get(r["name"], "(Vela gave no reason for this operator)")}
              for r in layers if r["target"] == "CPU"]
    from toolkit.provenance import sha256_bytes

    return {
        "target": target.name,
        "description": target.description,
        "estimate": "Vela's performance model, not a measurement",
        "time_covers": "the operators on the NPU only: the time of operators on the CPU is not in Vela's estimate",
        "compiler": {"name": "vela", "version": vela_version(), "options": dict(target.settings),
                     "config_file": "Arm/vela.ini (shipped with Vela)"},
        "operators": {"npu": npu, "cpu": cpu, "total": (npu or 0) + (cpu or 0)},
        "cpu_fallbacks": on_cpu,
        "folded_warnings": [w for w in warnings if w["output"] not in {c["output"] for c in on_cpu}],
        "sram_kib": _number(summary, "sram_memory_used"),
        "off_chip_flash_kib": _number(summary, "off_chip_flash_memory_used"),
        "on_chip_flash_kib": _number(summary, "on_chip_flash_memory_used"),
        "dram_kib": _number(summary, "dram_memory_used"),
        "core_clock_hz": _number(summary, "core_clock"),
        "inference_ms": _number(summary, "inference_time") * 1e3,
        "inferences_per_second": _number(summary, "inferences_per_second"),
        "cycles_npu": int(_number(summary, "cycles_npu")),
        "cycles_total": int(_number(summary, "cycles_total")),
        "macs": int(_number(summary, "nn_macs")),
        "weights_bytes": {"original": int(_number(summary, "total_original_weights")),
                          "npu_encoded": int(_number(summary, "total_npu_encoded_weights"))},
        "layers": layers,
        "compiled": {"bytes": len(compiled), "sha256": sha256_bytes(compiled),
                     "runs_on": "the Ethos-U driver only (the NPU part is a command stream), not on the host"},
        "_compiled_content": compiled,
    }


for _name, _accelerator, _system, _memory, _default, _description in CONFIGURATIONS:
    TARGETS.register(Target(
        _name, "ethos-u", _description, analyse, extra="npu", reads="tflite", default=_default, order=10,
        missing=lambda: None if vela_version() is not None else f"Arm's Vela: {INSTALL}",
        settings={"accelerator": _accelerator, "system_config": _system, "memory_mode": _memory}))
