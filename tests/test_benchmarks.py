"""benchmarks/: the scripts share benchmarks/_common.py and the package's names, and import cleanly.

Fast only: no benchmark is run, nothing is trained; the Markdown checks render committed JSON in memory.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from toolkit import schema
from toolkit.errors import DataError

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
# the files the toolkit's commands write: benchmarks name them through toolkit.schema
TOOLKIT_FILES = {schema.MANIFEST, schema.PARITY, schema.BENCH, schema.TRAIN, schema.FOOTPRINT, schema.GATE}


@pytest.fixture
def on_path(monkeypatch):
    """benchmarks/ on sys.path, as it is for `python benchmarks/NAME.py`."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def load(stem: str):
    """Import benchmarks/STEM.py by path, without running its main (the caller puts benchmarks/ on sys.path)."""
    name = f"_benchmark_{stem}"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing resolve the module by name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def test_the_scripts_are_found():
    assert {"_common", "ptq", "results_md", "gate"} <= {p.stem for p in SCRIPTS}
    assert {"manifest.json", "parity.json", "bench.json", "train.json", "footprint.json", "gate.json"} == TOOLKIT_FILES


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_fitness_no_path_hacks_no_copied_names(path):
    text = path.read_text()
    assert "sys.path.insert" not in text, f"{path.name}: import the installed package (and _common), no sys.path edits"
    assert 'get("model_bytes"' not in text and "get('model_bytes'" not in text, \
        f"{path.name}: an artifact's size is toolkit.schema.model_bytes(entry)"
    named = [node.value for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Constant)
             and isinstance(node.value, str) and (node.value in TOOLKIT_FILES
                                                  or node.value.rsplit("/", 1)[-1] in TOOLKIT_FILES)]
    assert not named, f"{path.name} types {named}: use toolkit.schema's names"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_script_imports_cleanly(path, on_path):
    module = load(path.stem)
    if path.stem != "_common":
        assert callable(module.main)


# --- _common's helpers ----------------------------------------------------------------------------------------


@pytest.fixture
def common(on_path):
    return load("_common")


def test_paths(common):
    assert common.BENCHMARKS == BENCHMARKS
    assert common.RESULTS == BENCHMARKS / "results"
    assert BENCHMARKS.parent / "README.md" == common.README


def test_parser_keeps_the_docstring_as_written(common):
    doc = "Title.\n\n    python benchmarks/x.py [--flag]\n"
    p = common.parser(doc)
    assert p.description == doc
    assert "    python benchmarks/x.py [--flag]" in p.format_help()


def test_toolkit_command_is_this_python(common, tmp_path):
    assert common.toolkit_command("parity", "--exports", tmp_path) == [
        sys.executable, "-m", "toolkit", "parity", "--exports", str(tmp_path)]


def test_replace_block(common, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- x:begin -->\nold\n<!-- x:end -->\noutro\n<!-- y:begin -->keep<!-- y:end -->\n")
    assert common.replace_block(readme, "x", "new\nlines")
    assert readme.read_text() == ("intro\n<!-- x:begin -->\nnew\nlines\n<!-- x:end -->\noutro\n"
                                  "<!-- y:begin -->keep<!-- y:end -->\n")
    before = readme.read_text()
    common.replace_block(readme, "x", "new\nlines")
    assert readme.read_text() == before  # a second run changes nothing
    assert common.read_block(readme, "x") == "new\nlines"  # what replace_block wrote, as given
    assert common.read_block(readme, "y") == "keep"
    assert common.read_block(readme, "missing") is None
    assert common.replace_block(readme, "missing", "text", required=False) is False
    with pytest.raises(SystemExit, match="missing:begin"):
        common.replace_block(readme, "missing", "text")
    assert readme.read_text() == before


def test_row_key(common):
    row = {"variant": "onnx", "runtime": "onnxruntime", "batch_size": 8, "threads": 2, "p50_ms": 1.0}
    assert common.row_key(row) == ("onnx", "onnxruntime", 8, 2)
    assert common.row_key({**row, "p50_ms": 2.0}) == common.row_key(row)


def _export(tmp_path: Path, data: bytes = b"model bytes", path: str = "artifacts-1/m.tflite") -> Path:
    exports = tmp_path / "exports"
    (exports / "artifacts-1").mkdir(parents=True)
    (exports / "artifacts-1" / "m.tflite").write_bytes(data)
    entry = {"variant": "tflite", "path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return exports, {"artifacts": [entry]}


def test_artifact_files_checks_each_file(common, tmp_path):
    exports, manifest = _export(tmp_path)
    assert common.artifact_files(exports, manifest) == {"tflite": (exports / "artifacts-1" / "m.tflite").resolve()}
    (exports / "artifacts-1" / "m.tflite").write_bytes(b"model bytez")  # same size, other bytes
    with pytest.raises(DataError, match="sha256"):
        common.artifact_files(exports, manifest)


def test_artifact_files_refuses_a_path_outside_the_export(common, tmp_path):
    exports, manifest = _export(tmp_path, path="../elsewhere.tflite")
    with pytest.raises(DataError, match="outside"):
        common.artifact_files(exports, manifest)


def test_cpu_text_from_raw_flags_as_from_features(common):
    from toolkit.provenance import cpu_description, cpu_features

    flags = ["avx2", "avx512f", "avx512_vnni"]
    old = {"cpu": "Some CPU", "cpu_flags": flags}
    assert common.cpu_text(old) == cpu_description({"cpu": "Some CPU", "cpu_features": cpu_features(flags)})
    assert "no AMX" in common.cpu_text(old)
    new = {"cpu": "Some CPU", "cpu_features": cpu_features(["amx_tile", "amx_int8", "amx_bf16"])}
    assert common.cpu_text(new) == cpu_description(new)


def test_mnist_array_reads_through_the_toolkit(common, tmp_path):
    import gzip

    import numpy as np

    labels = np.arange(60_000, dtype=np.uint8) % 10
    header = (2049).to_bytes(4, "big") + (60_000).to_bytes(4, "big")
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.tobytes()))
    got = common.mnist_array(tmp_path, "train_labels")
    assert got.dtype == np.uint8 and np.array_equal(got, labels)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.tobytes()[:-1]))
    with pytest.raises(DataError, match="truncated"):
        common.mnist_array(tmp_path, "train_labels")


# --- the committed texts follow from the committed JSON (rendered in memory) -----------------------------------
#
# Every page with measured numbers is made by a script from committed files; here each is made again, in
# memory, by the script's own rendering function, from the committed files alone, and must equal the
# committed text. A number typed into a page by hand, or a page left behind by its files, fails here.

RESULTS = BENCHMARKS / "results"
README = BENCHMARKS.parent / "README.md"

# benchmarks/PAGE: (script, its one result file) -- `markdown(read_json(results/FILE))` is the page
ONE_FILE_PAGES = {
    "ARCHITECTURES.md": ("architectures", "architectures.json"),
    "GATE.md": ("gate", "gate.json"),
    "PTQ.md": ("ptq", "ptq.json"),
    "ACCURACY_CONTROL.md": ("accuracy_control", "accuracy-control.json"),
    "MEMORY.md": ("memory", "memory.json"),
    "PIPELINE.md": ("pipeline", "pipeline.json"),
    "NPU.md": ("npu", "npu.json"),
    "PYTORCH.md": ("pytorch", "pytorch.json"),
    "TFLM_KERNELS.md": ("tflm_kernels", "tflm-kernels.json"),
    "INT8_ERROR.md": ("int8_error", "int8-error.json"),
    "TENSOR_PASS.md": ("tensor_pass", "tensor-pass.json"),
    "FINETUNE_RECIPES.md": ("finetune_recipes", "finetune-recipes.json"),
    "LEARNED_ROUNDING.md": ("learned_rounding", "learned-rounding.json"),
}
# benchmarks/PAGE: script -- pages made from several files: `markdown(read_results(results/))` is the page
MANY_FILE_PAGES = {
    "RESULTS.md": "results_md",
    "GPU.md": "gpu_md",
    "TRAINING.md": "training_md",
}
# benchmarks/*.md that no script renders, and why
NOT_RENDERED = {"README.md": "how the pages are made: scripts, commands, the GPU machine's setup (no benchmark result)"}
# README.md's generated blocks: block name -> (script, how it renders the block from the committed files)
README_BLOCKS = {
    "excerpt": ("readme_excerpt", lambda m: m.excerpt(m.NAME, *m.read_results(m.NAME, RESULTS))),
    "ptq": ("ptq", lambda m: m.readme_block(_json("ptq.json"))),
    "accuracy-control": ("accuracy_control", lambda m: m.readme_block(_json("accuracy-control.json"))),
}


def _json(name: str) -> dict:
    from toolkit.artifacts import read_json

    return read_json(RESULTS / name)


def test_every_page_is_rendered_here():
    """A new page under benchmarks/ or a new generated block in README.md or docs/ is added to the tables above."""
    pages = {p.name for p in BENCHMARKS.glob("*.md")}
    assert pages == set(ONE_FILE_PAGES) | set(MANY_FILE_PAGES) | set(NOT_RENDERED)
    blocks = {(path.name, name) for path in [README, *sorted((README.parent / "docs").glob("*.md"))]
              for name in re.findall(r"<!-- ([\w.-]+):begin -->", path.read_text())}
    assert blocks == {("README.md", name) for name in README_BLOCKS}


@pytest.mark.parametrize("text", sorted(ONE_FILE_PAGES))
def test_markdown_matches_the_committed_results(text, on_path):
    stem, result = ONE_FILE_PAGES[text]
    module = load(stem)
    assert module.markdown(_json(result)) == (BENCHMARKS / text).read_text()


@pytest.mark.parametrize("text", sorted(MANY_FILE_PAGES))
def test_markdown_of_several_files_matches_the_committed_results(text, on_path):
    module = load(MANY_FILE_PAGES[text])
    assert module.markdown(module.read_results(RESULTS)) == (BENCHMARKS / text).read_text()


@pytest.mark.parametrize("name", sorted(README_BLOCKS))
def test_readme_blocks_match_the_committed_results(name, on_path, common):
    stem, render = README_BLOCKS[name]
    committed = common.read_block(README, name)
    assert committed is not None, f"README.md has no {name} block"
    assert render(load(stem)) == committed


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.md")), ids=lambda p: p.name)
def test_bench_tables_match_their_json(path):
    """results/NAME.md and NAME.csv are what `toolkit bench` renders from results/NAME.json."""
    from toolkit.bench_render import to_csv, to_markdown

    doc = _json(path.with_suffix(".json").name)
    assert to_markdown(doc) == path.read_text()
    assert to_csv(doc) == path.with_suffix(".csv").read_text()

