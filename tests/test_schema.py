"""One module owns the files the commands share (toolkit/schema.py): their names, versions and read views."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from toolkit import schema
from toolkit.errors import DataError

REPO = Path(__file__).resolve().parent.parent
SHARED = {schema.MANIFEST, schema.TRAIN, schema.PARITY, schema.PARITY_MD, schema.BENCH, schema.GATE, schema.FOOTPRINT,
          schema.RECIPE, schema.REPORT, schema.LABELS, schema.MODEL, schema.PARITY_PNG, schema.FINETUNED_MODEL,
          schema.ROUNDED_MODEL}
NAMES = {"MANIFEST", "TRAIN", "PARITY", "PARITY_MD", "PARITY_PNG", "BENCH", "GATE", "FOOTPRINT", "RECIPE", "REPORT",
         "LABELS", "MODEL", "FINETUNED_MODEL", "ROUNDED_MODEL"}
# the directory's mechanics (locks, generations, atomic writes) that only ExportDir and its helpers call
MECHANICS = {"read_manifest", "reading", "writing", "verify_entry", "artifact_path", "reference_model_path",
             "MANIFEST"}
OWNERS = {"schema.py", "exportdir.py", "artifacts.py"}


def test_only_exportdir_joins_a_file_name_to_an_export_directory():
    """No stage spells where a file of the export directory lives or takes its lock itself: each asks its
    ExportDir (toolkit/exportdir.py). A ``schema.PARITY`` or ``artifacts.reading(...)`` in a stage is where
    two places would drift apart again."""
    found = []
    for path in (REPO / "toolkit").rglob("*.py"):
        if path.name in OWNERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and ((node.value.id == "schema" and node.attr in NAMES)
                         or (node.value.id == "artifacts" and node.attr in MECHANICS))):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value.id}.{node.attr}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(
                    ("-predictions.npz", "-latency.png", "-memory.png", "-tradeoff.png")):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value}")
    assert found == []


def test_an_export_dir_names_every_file_and_is_a_path():
    from toolkit.exportdir import ExportDir, Generation

    d = ExportDir("x")
    assert ExportDir.of(d) is d and ExportDir.of("x") == d and Path(d) == Path("x") and str(d) == "x"
    assert d.manifest_path == Path("x/manifest.json") and d.parity_png_path == Path("x/parity-disagreements.png")
    assert d.bench_outputs(Path("y/b.json"))["latency_png"] == Path("y/b-latency.png")
    assert d.predictions_beside(Path("x/parity.json")) == Path("x/parity-predictions.npz")
    g = Generation(Path("x/.staging-20260101T000000Z-abc123"))
    assert g.recorded("a.tflite") == "artifacts-20260101T000000Z-abc123/a.tflite"
    assert g.labels_path == Path("x/.staging-20260101T000000Z-abc123/labels.txt")


def test_a_missing_record_names_the_command_that_makes_it(tmp_path):
    from toolkit.exportdir import ExportDir

    with pytest.raises(DataError) as err:
        ExportDir(tmp_path).parity()
    assert "toolkit parity --exports" in (err.value.hint or "")
    assert ExportDir(tmp_path).bench(required=False) is None


def test_no_other_module_types_a_shared_file_name_or_the_size_rule():
    """A file name typed out in a second place, or "model_bytes else bytes" written again, is where two readers
    drift apart: both live in toolkit/schema.py."""
    found = []
    for path in [*(REPO / "toolkit").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        if path.name == "schema.py":
            continue
        src = path.read_text()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in SHARED:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value}")
        for i, line in enumerate(src.splitlines(), 1):
            if 'get("model_bytes"' in line or "get('model_bytes'" in line:
                found.append(f"{path.relative_to(REPO)}:{i} the size rule")
    assert found == []


def test_model_bytes_is_the_deployable_size():
    assert schema.model_bytes({"bytes": 10}) == 10
    assert schema.model_bytes({"bytes": 900, "model_bytes": 300}) == 300  # a C source's embedded model


def test_views_read_keys_and_refuse_a_newer_version(tmp_path):
    doc = schema.versioned(schema.PARITY, {"variants": {"a": {"passed": True}, "b": {"passed": False}},
                                           "reference": {"accuracy": 0.9}})
    assert next(iter(doc)) == schema.VERSION_KEY
    (tmp_path / schema.PARITY).write_text(json.dumps(doc))
    view = schema.Parity.read(tmp_path)
    assert view["reference"]["accuracy"] == 0.9 and view.passed() == ["a"]
    assert schema.Bench.read(tmp_path, required=False) is None
    with pytest.raises(DataError, match="not found"):
        schema.Bench.read(tmp_path)
    (tmp_path / schema.PARITY).write_text(json.dumps({**doc, schema.VERSION_KEY: 99}))
    with pytest.raises(DataError, match="schema version 99 is newer"):
        schema.Parity.read(tmp_path)
    from toolkit import artifacts

    with pytest.raises(DataError, match="schema version 99 is newer"):  # every reader of the package
        artifacts.read_json(tmp_path / schema.PARITY)
    old = {k: v for k, v in doc.items() if k != schema.VERSION_KEY}  # written before versions: version 1
    (tmp_path / schema.PARITY).write_text(json.dumps(old))
    assert schema.Parity.read(tmp_path).variants.keys() == {"a", "b"}


def test_manifest_view(quick_export):
    manifest = schema.Manifest.read(quick_export)
    assert manifest[schema.VERSION_KEY] == schema.VERSIONS[schema.MANIFEST]
    by = manifest.by_variant()
    micro = by["tflite-micro"]  # [dev] installs tflite-micro, so the quick export has it
    assert micro.size == micro["model_bytes"] < micro["bytes"]  # the model's bytes, not the C source's
    assert by["tflite"].size == by["tflite"]["bytes"]
