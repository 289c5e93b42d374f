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
EXEMPT = {"runners": "runtimes", "exporters": "formats", "provenance.py": "distribution names",
          "targets": "the format an accelerator's compiler reads",
          "references": "a source framework is named for the files it loads (the ONNX framework reads .onnx)"}


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


def test_a_new_format_is_one_module(tmp_path, data_dir):
    """A format added as one module in the package (here a copy of the package in a temporary directory), with
    no other edit: the module declares the format, its variant, its op check and the runtime that runs its files
    (export checks every file on its format's reference runtime: a format no runtime runs is refused). Then
    `toolkit export --format NAME` runs its op check and builds and checks its file (in the manifest, as any
    variant), --help lists it, and accuracy control's up-front check knows it has no variant to search
    (--max-accuracy-drop with only this format is refused, naming the variants that can be searched)."""
    import shutil

    pkg = tmp_path / "toolkit"
    shutil.copytree(PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "exporters" / "keras_copy.py").write_text('''
"""A toy format: the Keras file itself, copied."""
import dataclasses
import shutil
from toolkit import runners
from toolkit.exporters import Format, op_check, register, register_format

FORMAT = register_format(Format("keras-copy", "the .keras file as it is", order=50))


@op_check("keras-copy", "nothing to check")
def _ops(ctx):
    return None


@register("keras-copy", format="keras-copy", quantization="none", suffix=".keras", default=True)
def copy(ctx, path):
    shutil.copyfile(ctx.model_path, path)
    return {"copied_from": ctx.model_path.name}


# its reference runtime: a copied .keras file runs as the Keras model does
runners.register(dataclasses.replace(runners.get("tensorflow"), name="keras-copy-runtime", formats=("keras-copy",),
                                     default_for=("keras-copy",), in_default_set=False))
''')
    code = f"""
import contextlib, io, json, sys
from pathlib import Path
import keras
from toolkit import exporters
from toolkit.cli import main

print(exporters.formats(), [e.variant for e in exporters.select(('keras-copy',), None)])
keras.utils.set_random_seed(0)
inp = keras.Input((28, 28, 1), name="image")
keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(inp))).save("model.keras")
common = ["export", "--model", "model.keras", "--data-dir", {str(data_dir)!r}, "--format", "keras-copy", "--quiet"]
print("rc", main([*common, "--exports", "e"]))
manifest = json.loads(Path("e/manifest.json").read_text())
print("op_support", json.dumps(manifest["op_support"]))
(entry,) = manifest["artifacts"]
print("entry", entry["variant"], entry["format"], entry["quantization"], entry["copied_from"],
      (Path("e") / entry["path"]).read_bytes() == Path("model.keras").read_bytes())
print("checked", entry["check"]["agreement"], entry["check"]["max_abs_logit_diff"])  # run on its runtime
print("control rc", main([*common, "--exports", "c", "--max-accuracy-drop", "0.3"]))
help_text = io.StringIO()
with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
    main(["export", "--help"])
print("help", "keras-copy -> keras-copy (the .keras file as it is)" in " ".join(help_text.getvalue().split()))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "('tflite', 'onnx', 'tflite-micro', 'openvino', 'keras-copy') ['keras-copy']", lines
    assert "rc 0" in lines
    assert 'op_support {"keras-copy": {"supported": true, "checked_by": "nothing to check", "unsupported_ops": []}}' \
        in lines, lines
    assert "entry keras-copy keras-copy none model.keras True" in lines and "checked 1.0 0.0" in lines, lines
    assert "control rc 2" in lines and "help True" in lines, lines
    assert "accuracy control applies to tflite-int8, onnx-int8, tflite-micro; none of them is being exported" \
        in out.stderr
