"""A file one runtime cannot load costs that row, not the run (bench, parity, gate, the report).

The case is built without relying on any runtime's bug: a third-party runtime module, installed
for the test through the ``toolkit.runtimes`` entry-point group (so bench's spawned workers find it
too), runs ONNX files with onnxruntime but refuses to load ``onnx-int8`` (or, in its ``run`` mode,
loads it and fails on the first call), with a multi-line reason like OpenVINO's.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap

import pytest

from toolkit import runners
from toolkit.cli import main

FAST = ["--batch-sizes", "1,4", "--threads", "1", "--min-runs", "5", "--min-seconds", "0", "--warmup", "1",
        "--warmup-seconds", "0", "--no-plots"]

MODULE = '''
"""A runtime for the tests: onnxruntime, except that it refuses onnx-int8."""
from pathlib import Path

from toolkit.errors import DataError, NotReadableHere
from toolkit.runners import Runtime, register
from toolkit.runners.onnxrt import OnnxRuntimeRunner

REASON = "Exception from src/plugin.cpp:54:\\nrefused-by-test: this runtime does not take int8 files\\nsecond line"


class Refusing(OnnxRuntimeRunner):
    def run_raw(self, x):
        raise RuntimeError(REASON)

    def _infer(self, images):
        raise RuntimeError(REASON)


def _open(path, *, device="cpu", threads=None):
    if Path(path).name.startswith("onnx-int8"):
        raise DataError("cannot compile " + Path(path).name + ": refused-by-test", detail=REASON)
    return OnnxRuntimeRunner(path, threads=threads)


def _open_has_no_reader(path, *, device="cpu", threads=None):
    if Path(path).name.startswith("onnx-int8"):
        raise NotReadableHere("no reader here for " + Path(path).name + ": test-reader-limit")
    return OnnxRuntimeRunner(path, threads=threads)


def _open_fails_on_run(path, *, device="cpu", threads=None):
    return (Refusing if Path(path).name.startswith("onnx-int8") else OnnxRuntimeRunner)(path, threads=threads)


register(Runtime(name="refuses-int8", formats=("onnx",), devices=("cpu",), summary="test: refuses onnx-int8",
                 open=_open, in_default_set=False, order=900))
register(Runtime(name="fails-int8-on-run", formats=("onnx",), devices=("cpu",), summary="test: fails onnx-int8 on run",
                 open=_open_fails_on_run, in_default_set=False, order=901))
register(Runtime(name="no-int8-reader", formats=("onnx",), devices=("cpu",), summary="test: cannot read onnx-int8",
                 open=_open_has_no_reader, in_default_set=False, order=902))
'''


@pytest.fixture
def refusing_runtime(tmp_path_factory, monkeypatch):
    """The runtime module and its entry point on sys.path (inherited by spawned workers)."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "toolkit_refusing_runtime.py").write_text(textwrap.dedent(MODULE))
    info = root / "toolkit_refusing_runtime-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toolkit-refusing-runtime\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[toolkit.runtimes]\nrefusing = toolkit_refusing_runtime\n")
    monkeypatch.syspath_prepend(str(root))
    runners.RUNTIMES.forget()  # the next lookup scans again and finds the entry point
    yield
    runners.RUNTIMES.forget("refuses-int8", "fails-int8-on-run", "no-int8-reader")
    sys.modules.pop("toolkit_refusing_runtime", None)  # registered again by the next test's scan


def test_bench_records_the_failed_row_and_measures_every_other(quick_export, refusing_runtime, tmp_path, capsys):
    rc = main(["bench", "--exports", str(quick_export), "--variants", "onnx", "onnx-int8", "--runtimes", "onnxruntime",
               "refuses-int8", *FAST, "--json", str(tmp_path / "b.json")])
    captured = capsys.readouterr()
    assert rc == 7
    doc = json.loads((tmp_path / "b.json").read_text())
    rows = {(r["variant"], r["runtime"], r["batch_size"]) for r in doc["results"]}
    assert rows == {(v, rt, b) for v, rt in [("onnx", "onnxruntime"), ("onnx-int8", "onnxruntime"),
                                              ("onnx", "refuses-int8")] for b in (1, 4)}
    (failed,) = doc["failed"]
    assert failed["variant"] == "onnx-int8" and failed["runtime"] == "refuses-int8" and failed["stage"] == "load"
    assert failed["batch_sizes"] == [1, 4] and "refused-by-test" in failed["reason"]
    assert "second line" in failed["detail"]  # the runtime's whole reason is kept
    assert "onnx-int8 on refuses-int8" in (tmp_path / "b.md").read_text()
    assert "FAILED onnx-int8 on refuses-int8" in captured.out
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("toolkit bench: error: 1 row(s) failed, 6 measured and written")
    assert "Traceback" not in captured.err


def test_a_file_a_second_reader_cannot_read_is_a_skip_with_its_reason(quick_export, refusing_runtime, tmp_path,
                                                                       capsys):
    """errors.NotReadableHere (OpenVINO's TFLite reader on ai-edge-quantizer's fp16 file): a limit of the reader,
    not of the file: the group is skipped with the reason, the other rows measured, and bench exits 0."""
    rc = main(["bench", "--exports", str(quick_export), "--variants", "onnx", "onnx-int8", "--runtimes",
               "no-int8-reader", *FAST, "--json", str(tmp_path / "b.json")])
    assert rc == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert {(r["variant"], r["batch_size"]) for r in doc["results"]} == {("onnx", 1), ("onnx", 4)}
    assert not doc["failed"]
    (skip,) = [s for s in doc["skipped"] if s["runtime"] == "no-int8-reader"]
    assert skip["variant"] == "onnx-int8" and "test-reader-limit" in skip["reason"]
    assert "skipped onnx-int8 on no-int8-reader" in capsys.readouterr().out


def test_a_failure_on_one_batch_size_costs_that_row(quick_export, refusing_runtime, tmp_path):
    rc = main(["bench", "--exports", str(quick_export), "--variants", "onnx-int8", "--runtimes", "fails-int8-on-run",
               "onnxruntime", *FAST, "--json", str(tmp_path / "b.json")])
    assert rc == 7
    doc = json.loads((tmp_path / "b.json").read_text())
    assert {(r["runtime"], r["batch_size"]) for r in doc["results"]} == {("onnxruntime", 1), ("onnxruntime", 4)}
    assert [(f["stage"], f["batch_sizes"]) for f in doc["failed"]] == [("run", [1]), ("run", [4])]
    assert all(f["reason"] == "RuntimeError: refused-by-test: this runtime does not take int8 files"
               for f in doc["failed"])  # the informative line, not OpenVINO-style "Exception from src/..."


def test_parity_checks_every_other_row_and_exits_7(export_copy, refusing_runtime, tmp_path, capsys):
    rc = main(["parity", "--exports", str(export_copy), "--variants", "onnx", "onnx-int8", "--runtimes",
               "onnxruntime", "refuses-int8", "fails-int8-on-run"])
    captured = capsys.readouterr()
    assert rc == 7
    parity = json.loads((export_copy / "parity.json").read_text())
    assert set(parity["variants"]) == {"onnx", "onnx-int8", "onnx@refuses-int8", "onnx@fails-int8-on-run"}
    assert all(v["passed"] for v in parity["variants"].values())
    assert parity["passed"] is False  # checks not made are not passes
    failed = {f["key"]: f for f in parity["failed"]}
    assert set(failed) == {"onnx-int8@refuses-int8", "onnx-int8@fails-int8-on-run"}
    assert failed["onnx-int8@refuses-int8"]["stage"] == "load"
    assert failed["onnx-int8@fails-int8-on-run"]["stage"] == "run"
    assert "onnx-int8@refuses-int8" in (export_copy / "parity.md").read_text()
    assert "not checked: onnx-int8@refuses-int8 on refuses-int8 (load)" in captured.err
    assert captured.err.strip().splitlines()[-1].startswith("toolkit parity: error: 2 check(s) could not be made")


@pytest.mark.slow  # ~35 s: a gate and a report over an export with a refused row (parity's and bench's
# failed rows stay in the default suite)
def test_gate_and_report_list_the_failed_rows(export_copy, refusing_runtime, tmp_path, capsys):
    baseline = tmp_path / "baseline"
    shutil.copytree(export_copy, baseline, symlinks=True)
    assert main(["parity", "--exports", str(baseline), "--variants", "onnx", "onnx-int8", "--quiet"]) == 0
    assert main(["parity", "--exports", str(export_copy), "--variants", "onnx", "onnx-int8", "--runtimes",
                 "onnxruntime", "refuses-int8", "--quiet"]) == 7
    capsys.readouterr()
    assert main(["gate", "--baseline", str(baseline), "--exports", str(export_copy)]) == 7
    doc = json.loads((export_copy / "gate.json").read_text())
    assert doc["summary"]["incomplete"] == 1 and doc["summary"]["failed"] == 0
    (row,) = [c for c in doc["checks"] if c["kind"] == "incomplete"]
    assert row["name"] == "onnx-int8@refuses-int8 on refuses-int8" and "refused-by-test" in row["detail"]
    assert main(["bench", "--exports", str(export_copy), "--variants", "onnx-int8", "--runtimes", "onnxruntime",
                 "refuses-int8", *FAST]) == 7
    from toolkit.report import build_report

    report = build_report(export_copy)
    assert "### Rows that failed" in report
    assert "parity: `onnx-int8@refuses-int8` on refuses-int8 (load)" in report
    assert "bench: onnx-int8 on refuses-int8 (cpu, threads 1, batch 1,4, load)" in report


def test_one_helper_for_an_exception_message():
    """Never empty (the type name for an empty message), OpenVINO's location lines skipped, the real reason kept
    when the first informative line stops at a nested location (EfficientNetB0's tflite-dynamic, measured)."""
    from toolkit.errors import first_line, whole_message

    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(ValueError("bad value\nmore")) == "bad value"
    openvino = ("Exception from src/inference/src/cpp/core.cpp:117:\nException from src/core/src/pass/graph_rewrite.cpp:"
                "298:\n[TransposeToReshape] END: node: Transpose_3550 CALLBACK HAS THROWN: Exception from "
                "src/core/src/shape_util.cpp:66:\nAccessing out-of-range dimension\n")
    assert first_line(RuntimeError(openvino), None) == ("[TransposeToReshape] END: node: Transpose_3550 CALLBACK HAS "
                                                        "THROWN: Exception from src/core/src/shape_util.cpp:66: ... "
                                                        "Accessing out-of-range dimension")
    assert len(first_line(RuntimeError("x" * 1000))) == 300
    assert whole_message(RuntimeError(openvino)).endswith("| Accessing out-of-range dimension")
    from pathlib import Path

    # the idiom the helper replaced, a message's first line taken by hand, is nowhere else in the package: found
    # in the syntax tree, whatever the spacing or line breaks (the sample shows that each form is found)
    sample = ('a = str(exc).splitlines()[0]\nb = (str(exc).splitlines() or [""])[0]\nc = msg.split("\\n")[0]\n'
              'd = str(exc).partition("\\n")[0]\ne = str(exc).split("\\n", 1)[ 0 ]\nf = text.splitlines()\n')
    assert [line for line, _ in _first_line_by_hand(sample)] == [1, 2, 3, 4, 5]
    package = Path(__file__).resolve().parent.parent / "toolkit"
    found = {path.relative_to(package).as_posix(): hits for path in package.rglob("*.py")
             if (hits := _first_line_by_hand(path.read_text()))}
    assert found == {}, found


def _first_line_by_hand(source: str) -> list[tuple[int, str]]:
    """(line, code) of each expression in ``source`` that takes the first line of a text by hand:
    ``X.splitlines()[0]``, ``(X.splitlines() or [...])[0]``, ``X.split("\\n")[0]``, ``X.partition("\\n")[0]``."""
    import ast

    def lines_of(node: ast.AST) -> bool:  # X.splitlines(), X.split("\n"...), X.partition("\n")
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            return lines_of(node.values[0])
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            return False
        name = node.func.attr
        newline = bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "\n"
        return name == "splitlines" or (name in ("split", "partition") and newline)

    return [(node.lineno, ast.unparse(node)) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == 0
            and lines_of(node.value)]
