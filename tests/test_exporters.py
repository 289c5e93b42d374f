"""Formats as plugins: found by scanning toolkit/exporters/, each declaring what the rest needs, and no
other file of the package naming a format or a variant (adding a format is adding a module)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import exporters
from toolkit.errors import UsageError

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"
# where a format's name is not a second place to edit: a runtime declares the formats it runs; a format may build
# on another (tflite-micro embeds the tflite-int8 model); provenance lists pip distributions whose names match
EXEMPT = {"runners": "runtimes", "exporters": "formats", "provenance.py": "distribution names"}


def _string_constants(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.add(node.value)
    return out


def test_every_format_module_registers_itself():
    formats = exporters.load_all()
    assert list(formats) == ["tflite", "onnx", "tflite-micro", "openvino"]
    modules = {p.stem if p.is_file() else p.name for p in (PACKAGE / "exporters").iterdir()
               if not p.name.startswith(("_", ".")) and (p.suffix == ".py" or p.is_dir())}
    assert modules == {"tflite", "onnx", "tflm", "openvino"}  # one module or package per format
    for fmt in formats.values():
        assert fmt.summary and fmt.name in exporters.OP_CHECKS
        assert any(e.format == fmt.name for e in exporters.REGISTRY.values())
    # the registry's order is the order of export and of every table: formats by order, float before quantized
    assert list(exporters.REGISTRY) == ["tflite", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx", "onnx-int8",
                                        "tflite-micro", "openvino", "openvino-fp16"]
    assert [e.variant for e in exporters.REGISTRY.values() if e.controllable] == ["tflite-int8", "onnx-int8",
                                                                                 "tflite-micro"]


def test_no_other_file_names_a_format_or_variant():
    """A format's or variant's name as a string in code outside its own module is a second place to edit when a
    format is added (a CLI choice, a footprint branch, a report line): it must come from the registry instead."""
    names = set(exporters.load_all()) | set(exporters.REGISTRY)
    naming = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.split("/")[0] in EXEMPT:
            continue
        found = _string_constants(path) & names
        if found:
            naming[rel] = found
    assert naming == {}, naming


def test_cli_choices_and_help_come_from_the_registry():
    from toolkit.cli import build_parser

    parser = build_parser()
    export = next(a for a in parser._subparsers._group_actions[0].choices["export"]._actions if "--format" in a.option_strings)
    assert tuple(export.choices) == (*exporters.formats(), "all")
    for fmt in exporters.formats():
        assert f"{fmt} ->" in export.help


def test_an_unknown_format_is_an_error_naming_the_known_ones():
    with pytest.raises(UsageError, match="unknown format 'coreml'.*known: tflite, onnx"):
        exporters.get_format("coreml")
    with pytest.raises(UsageError, match="--format must be among tflite, onnx, tflite-micro, openvino, all"):
        exporters.select(("coreml",), None)


def test_a_new_format_is_one_module(tmp_path):
    """A format added as one module in the package (here a copy of the package in a temporary directory) is
    exported by --format NAME, listed in --help and planned by accuracy control's checks, without another edit."""
    import shutil

    pkg = tmp_path / "toolkit"
    shutil.copytree(PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "exporters" / "keras_copy.py").write_text('''
"""A toy format: the Keras file itself, copied."""
import shutil
from toolkit.exporters import Format, op_check, register, register_format

FORMAT = register_format(Format("keras-copy", "the .keras file as it is", order=50))


@op_check("keras-copy", "nothing to check")
def _ops(ctx):
    return None


@register("keras-copy", format="keras-copy", quantization="none", suffix=".keras", default=True)
def copy(ctx, path):
    shutil.copyfile(ctx.model_path, path)
    return {}
''')
    code = ("from toolkit import exporters; from toolkit.cli import build_parser; "
            "print(exporters.formats()); print([e.variant for e in exporters.select(('keras-copy',), None)]); "
            "p = build_parser(); p.parse_args(['export', '--format', 'keras-copy']); print('parsed')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'keras-copy')" in out.stdout and "['keras-copy']" in out.stdout and "parsed" in out.stdout
