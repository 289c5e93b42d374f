"""Runtimes as plugins: one registry, one module per runtime, no fall-through, no import cycle;
OpenVINO as runtime and export; peak memory per bench row."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from toolkit import runners
from toolkit.cli import main
from toolkit.errors import UsageError

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"
FAST = ["--batch-sizes", "1", "--threads", "1", "--min-runs", "5", "--min-seconds", "0", "--warmup", "1",
        "--warmup-seconds", "0", "--no-plots"]


def test_every_runtime_module_registers_itself():
    registry = runners.load_all()
    modules = {p.stem for p in (PACKAGE / "runners").glob("*.py") if p.stem not in ("__init__", "base")}
    assert {"litert", "litert-builtin", "onnxruntime", "onnxruntime-trt", "tflm", "tensorflow", "openvino",
            "openvino-bf16", "keras-jax", "torch"} <= set(registry)
    assert len(modules) == 8  # one module per runtime family; each registers what it runs
    for runtime in registry.values():
        assert runtime.formats and runtime.devices and runtime.summary
    for fmt in ("tflite", "onnx", "keras", "tflite-micro", "openvino", "torch"):
        assert fmt in runners.default_for(fmt).formats


def test_unknown_runtime_or_format_is_an_error_never_a_fall_through(quick_export, capsys):
    with pytest.raises(UsageError, match="unknown runtime 'coreml'.*known: litert"):
        runners.get("coreml")
    with pytest.raises(UsageError, match="no runtime runs format 'coreml'"):
        runners.runner_for("coreml", quick_export / "manifest.json")
    assert main(["bench", "--exports", str(quick_export), "--runtimes", "coreml"]) == 2
    assert "unknown runtime(s) coreml" in capsys.readouterr().err
    assert main(["parity", "--exports", str(quick_export), "--runtimes", "coreml"]) == 2


def test_a_runtime_is_one_module_and_nothing_else():
    """litert-builtin (LiteRT without XNNPACK) was added as one module: no other file of the package
    names it, and yet parity and bench run it (the next test)."""
    naming = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if "litert-builtin" in p.read_text()]
    assert naming == ["runners/litert_builtin.py"]
    bench_source = (PACKAGE / "bench.py").read_text() + (PACKAGE / "bench_render.py").read_text()
    for name in runners.names():  # bench is a plan and one loop: no runtime names in it
        assert f'"{name}"' not in bench_source, name


def test_the_added_runtime_appears_in_parity_and_bench(quick_export, tmp_path):
    assert main(["parity", "--exports", str(quick_export), "--variants", "tflite-int8", "--runtimes", "litert",
                 "litert-builtin", "--json", str(tmp_path / "p.json")]) == 0
    parity = json.loads((tmp_path / "p.json").read_text())
    assert set(parity["variants"]) == {"tflite-int8", "tflite-int8@litert-builtin"}
    builtin = parity["variants"]["tflite-int8@litert-builtin"]
    assert builtin["runtime"] == "litert-builtin" and builtin["providers"] == ["builtin kernels"] and builtin["passed"]
    assert main(["bench", "--exports", str(quick_export), "--variants", "tflite-int8", "--runtimes",
                 "litert-builtin", *FAST, "--json", str(tmp_path / "b.json")]) == 0
    (row,) = json.loads((tmp_path / "b.json").read_text())["results"]
    assert row["runtime"] == "litert-builtin" and row["providers"] == ["builtin kernels"]


def _module_graph() -> dict[str, set[str]]:
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        rel = p.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".")
        mods[rel.removesuffix(".__init__")] = p
    edges = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mod = node.module if node.level == 0 else ".".join(m.split(".")[: -node.level] + [node.module])
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            edges[m] |= {t for t in names if t in mods and t != m}
    return edges


def test_no_import_cycle_in_the_package():
    edges = _module_graph()
    state, cycles = {}, []

    def visit(u, stack):
        state[u] = 1
        for v in edges[u]:
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v, stack + [v])
        state[u] = 2

    for m in edges:
        if m not in state:
            visit(m, [m])
    assert not cycles
    assert not any(m.startswith("toolkit.cli.") and "toolkit.cli" in e for m, e in edges.items()), \
        "a command module imports the root parser"


# ----------------------------------------------------------------------------- OpenVINO
def test_openvino_ir_variants_with_their_weights_as_companions(quick_export):
    manifest = json.loads((quick_export / "manifest.json").read_text())
    by = {e["variant"]: e for e in manifest["artifacts"]}
    for name, weights in (("openvino", "float32"), ("openvino-fp16", "float16 (compress_to_fp16)")):
        e = by[name]
        assert e["format"] == "openvino" and e["path"].endswith(".xml") and e["weights"] == weights
        (bin_,) = e["companions"]
        assert bin_["path"].endswith(".bin") and e["model_bytes"] == e["bytes"] + bin_["bytes"]
    ratio = by["openvino"]["model_bytes"] / by["openvino-fp16"]["model_bytes"]
    assert 1.9 < ratio < 2.1
    assert by["openvino"]["check"]["max_abs_logit_diff"] < 1e-3


def test_a_changed_openvino_weights_file_fails_verify(export_copy, capsys):
    manifest = json.loads((export_copy / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["variant"] == "openvino")
    weights = export_copy / entry["companions"][0]["path"]
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert main(["verify", "--exports", str(export_copy)]) == 3
    assert "openvino" in capsys.readouterr().err


def test_openvino_parity_passes_the_same_gates(quick_export, tmp_path):
    """OpenVINO runs each format it reads (TFLite and ONNX, float and int8, its own IR) under the settings bench
    times; bf16 (where the CPU has it) is judged by the reduced-precision gates, f32 by the float ones. One variant
    per reader and precision (the other float variants take the same paths: a full run of all eight is minutes)."""
    from toolkit.runners.openvino import cpu_has_bf16

    wanted = ["openvino", "openvino-bf16"] if cpu_has_bf16() else ["openvino"]
    variants = ["tflite", "tflite-int8", "onnx-int8", "openvino", "tflite-micro"]
    assert main(["parity", "--exports", str(quick_export), "--runtimes", *wanted, "--variants", *variants,
                 "--json", str(tmp_path / "p.json")]) == 0
    parity = json.loads((tmp_path / "p.json").read_text())
    expected = {v if v.startswith("openvino") else f"{v}@openvino" for v in variants if v != "tflite-micro"}
    if cpu_has_bf16():
        expected |= {f"{v}@openvino-bf16" for v in variants if v != "tflite-micro"}
    assert set(parity["variants"]) == expected
    for v in parity["variants"].values():
        assert v["passed"]
        precision = v["runtime_settings"]["inference_precision"]
        assert precision == ("bf16" if v["runtime"] == "openvino-bf16" else "f32")
        metrics = {g["metric"] for g in v["gates"]}
        if v["runtime"] == "openvino-bf16":
            assert "max_abs_logit_diff" not in metrics  # bf16 is not float32: no float-exactness gate
    assert any(s["variant"] == "tflite-micro" for s in parity["skipped"])


# ----------------------------------------------------------------------------- memory
def test_bench_records_peak_memory_per_row(quick_export, tmp_path):
    """Each row is measured in a fresh process: the 13 MB float model's peak RSS exceeds its 3.3 MB int8
    variant's on the same runtime, and every row says what the process held before loading."""
    assert main(["bench", "--exports", str(quick_export), "--variants", "tflite", "tflite-int8", "openvino",
                 "--runtimes", "litert", "openvino", *FAST, "--json", str(tmp_path / "b.json")]) == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    rows = {(r["variant"], r["runtime"]): r for r in doc["results"]}
    assert set(rows) == {("tflite", "litert"), ("tflite-int8", "litert"), ("tflite", "openvino"),
                         ("tflite-int8", "openvino"), ("openvino", "openvino")}
    for r in rows.values():
        assert r["peak_rss_mb"] >= r["rss_after_load_mb"] > 0 and r["rss_before_load_mb"] > 0
        assert r["load_ms"] > 0
    float_mb, int8_mb = rows[("tflite", "litert")]["peak_rss_mb"], rows[("tflite-int8", "litert")]["peak_rss_mb"]
    assert float_mb - int8_mb > 5, (float_mb, int8_mb)
    assert rows[("openvino", "openvino")]["inference_precision"] == "f32"
    assert rows[("openvino", "openvino")]["providers"] == ["OpenVINO CPU (f32)"]
    md = (tmp_path / "b.md").read_text()
    assert "peak RSS MiB" in md


def test_footprint_and_diagnose_name_formats_they_do_not_know(export_copy, capsys):
    manifest = json.loads((export_copy / "manifest.json").read_text())
    manifest["artifacts"][3]["format"] = "coreml"  # tflite-int8, as if a newer toolkit had written it
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["footprint", "--exports", str(export_copy)]) == 3
    assert "no microcontroller footprint is known for format 'coreml'" in capsys.readouterr().err
    assert main(["parity", "--exports", str(export_copy), "--diagnose", "tflite-int8"]) == 2
    assert "format coreml" in capsys.readouterr().err


def test_cli_is_a_package_with_one_module_per_command():
    cli = PACKAGE / "cli"
    assert {p.stem for p in cli.glob("*.py")} == {"__init__", "common", "train", "export", "parity", "bench",
                                                   "footprint", "gate", "run"}
    assert not list(PACKAGE.glob("cli_*.py"))
    assert 'toolkit = "toolkit.cli:main"' in (PACKAGE.parent / "pyproject.toml").read_text()


def test_no_function_over_80_lines_and_no_module_over_500():
    """Long functions split along their seams; a module that grows past 500 lines is two modules."""
    long = []
    for p in PACKAGE.rglob("*.py"):
        src = p.read_text()
        if src.count("\n") > 500:
            long.append(f"{p.relative_to(PACKAGE)}: {src.count(chr(10))} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{p.relative_to(PACKAGE)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1}")
    assert long == []
