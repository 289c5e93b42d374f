import json
import shutil

import numpy as np
import pytest
from conftest import snapshot

from toolkit import artifacts, exporters
from toolkit.cli import main
from toolkit.config import ExportConfig
from toolkit.errors import ConversionError, UsageError
from toolkit.export import export
from toolkit.provenance import sha256_file
from toolkit.runners import runner_for

SIX = ["tflite", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx", "onnx-int8"]
# tflite-micro and the OpenVINO IRs join `all` when their dependencies are installed (dev has them)
ALL = [*SIX, "tflite-micro", "openvino", "openvino-fp16"]


def _manifest(exports):
    return json.loads((exports / "manifest.json").read_text())


def _entry(exports, variant):
    return next(e for e in _manifest(exports)["artifacts"] if e["variant"] == variant)


def test_selection_rules():
    names = lambda fmt, q=None: [e.variant for e in exporters.select(fmt, q)]  # noqa: E731
    assert names("tflite") == ["tflite", "tflite-int8"]
    assert names("onnx") == ["onnx", "onnx-int8"]
    assert names("all") == ALL
    assert names("tflite", ("fp16", "dynamic")) == ["tflite-fp16", "tflite-dynamic"]
    assert names("all", ("int8",)) == ["tflite-int8", "onnx-int8", "tflite-micro"]
    assert names("tflite-micro") == ["tflite-micro"]
    assert names("openvino") == ["openvino"] and names("openvino", ("fp16",)) == ["openvino-fp16"]
    with pytest.raises(UsageError):
        exporters.select("onnx", ("dynamic",))


def test_manifest_matches_files(quick_export):
    manifest = _manifest(quick_export)
    assert [e["variant"] for e in manifest["artifacts"]] == ALL
    for e in manifest["artifacts"]:
        path = quick_export / e["path"]
        assert path.stat().st_size == e["bytes"]
        assert sha256_file(path) == e["sha256"]
        # TFLM models have a fixed batch of one; everything else a dynamic batch
        assert e["inputs"][0]["shape"] == ([1, 28, 28, 1] if e["format"] == "tflite-micro" else [None, 28, 28, 1])
        assert e["outputs"][0]["shape"] == ([1, 10] if e["format"] == "tflite-micro" else [None, 10])
        assert e["conversion_seconds"] > 0
        assert e["check"]["agreement"] >= 0.95
    assert manifest["source_model"]["sha256"] == sha256_file(quick_export / "model.keras")
    assert manifest["source_model"]["parameters"] == 3_274_634
    prov = manifest["provenance"]
    assert {"created", "git_commit", "versions", "machine"} <= set(prov)
    assert prov["versions"]["tf2onnx"] and prov["versions"]["onnxruntime"]


def test_calibration_recorded(quick_export):
    for variant in ("tflite-int8", "onnx-int8", "tflite-micro"):
        cal = _entry(quick_export, variant)["calibration"]
        assert cal["count"] == 200 and cal["seed"] == 0 and len(cal["indices_sha256"]) == 64
    onnx = _entry(quick_export, "onnx-int8")["calibration"]
    assert onnx["method"] == "auto" and onnx["estimator"] in ("minmax", "mean-minmax", "tail-aware")
    assert onnx["chosen_on"] and onnx["long_tails"]["of"] > 0  # why this estimator, from the data
    assert "calibration" not in _entry(quick_export, "tflite")


def test_int8_is_about_four_times_smaller(quick_export):
    for fmt in ("tflite", "onnx"):
        ratio = _entry(quick_export, fmt)["bytes"] / _entry(quick_export, f"{fmt}-int8")["bytes"]
        assert 3.5 < ratio < 4.1, (fmt, ratio)
    ratio = _entry(quick_export, "tflite")["bytes"] / _entry(quick_export, "tflite-fp16")["bytes"]
    assert 1.9 < ratio < 2.1


def test_tflite_int8_is_full_integer(quick_export):
    entry = _entry(quick_export, "tflite-int8")
    assert entry["inputs"][0]["dtype"] == "int8" and entry["outputs"][0]["dtype"] == "int8"
    assert entry["inputs"][0]["scale"] > 0 and "zero_point" in entry["inputs"][0]
    runner = runner_for("tflite", quick_export / entry["path"], use_xnnpack=False)
    dtypes = set(runner.tensor_dtypes().values())
    assert "float32" not in dtypes and "float16" not in dtypes, dtypes
    ops = set(runner.op_names())
    assert {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"} <= ops
    assert not ops & {"QUANTIZE", "DEQUANTIZE"}, ops
    # the float model, for contrast, is float throughout
    float_runner = runner_for("tflite", quick_export / _entry(quick_export, "tflite")["path"])
    assert "float32" in set(float_runner.tensor_dtypes().values())


def test_onnx_passes_full_check_and_runs_any_batch(quick_export, mnist):
    import onnx

    for variant in ("onnx", "onnx-int8"):
        path = quick_export / _entry(quick_export, variant)["path"]
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        runner = runner_for("onnx", path)
        assert runner.input_spec.name == "image" and runner.output_spec.name == "logits"
        for batch in (1, 7, 64):
            assert runner.infer(mnist.test.images[:batch]).shape == (batch, 10)


def test_onnx_int8_is_qdq(quick_export):
    import onnx

    model = onnx.load(quick_export / _entry(quick_export, "onnx-int8")["path"])
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_onnx_int8_computes_what_its_qdq_graph_says_on_this_cpu(quick_export, mnist):
    """onnxruntime's fused int8 kernels give the numbers of the file's own Q/DQ graph computed in float (all
    graph optimizations off), whatever the CPU: on x86 CPUs without VNNI (this AMD EPYC exposes AVX2 only) its
    uint8 x int8 kernels add pairs of products in 16 bits and saturate with 8-bit weights; the exporter writes
    7-bit weights (weight_bits). Without them, the seed CNN agreed with its own Q/DQ graph on about 99.7% of the
    test images here, MobileNetV2 on 96%."""
    import onnx
    import onnxruntime as ort

    entry = _entry(quick_export, "onnx-int8")
    path = quick_export / entry["path"]
    assert entry["weight_bits"] == 7
    model = onnx.load(path)
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    kernels = [weights[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear"
               and weights.get(n.input[0]) is not None and weights[n.input[0]].dtype == np.int8]
    assert kernels and all(np.abs(k).max() <= 64 for k in kernels)  # 7 bits (reduce_range: -64..63)
    images = mnist.test.images[:2000]
    fused = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    qdq = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"])
    a, b = (s.run(None, {"image": images})[0] for s in (fused, qdq))
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.999


def test_refuses_to_overwrite_without_force(export_copy, capsys):
    before = snapshot(export_copy)
    assert main(["export", "--exports", str(export_copy)]) == 2
    assert "--force" in capsys.readouterr().err
    assert snapshot(export_copy) == before


def test_failure_mid_export_leaves_previous_export_identical(export_copy, data_dir, monkeypatch):
    before = snapshot(export_copy)

    def boom(ctx, path):
        raise RuntimeError("simulated converter crash")

    broken = [exporters.Exporter(v, f, q, ".bin", boom, True) for v, f, q in
              (("tflite", "tflite", "none"), ("onnx", "onnx", "none"))]
    with pytest.raises(ConversionError, match="no variant could be exported: tflite: RuntimeError: simulated converter crash"):
        export(ExportConfig(exports=export_copy, data_dir=data_dir, force=True, verbose=False), broken)
    assert snapshot(export_copy) == before
    assert not [p for p in export_copy.iterdir() if p.name.startswith(artifacts.STAGING_PREFIX)]


def test_one_variant_failing_commits_the_others(export_copy, data_dir, capsys):
    """Partial success: the variant that cannot be made is listed with its stage and reason."""
    chosen = exporters.select("all", None)

    def boom(ctx, path):
        raise RuntimeError("simulated converter crash")

    broken = [chosen[0], exporters.Exporter("onnx", "onnx", "none", ".onnx", boom, True)]
    manifest = export(ExportConfig(exports=export_copy, data_dir=data_dir, force=True, verbose=False), broken)
    assert [e["variant"] for e in manifest["artifacts"]] == ["tflite"]
    assert manifest["failed"] == [{"variant": "onnx", "format": "onnx", "stage": "convert",  # errors.failure_record
                                   "reason": "RuntimeError: simulated converter crash",
                                   "detail": "simulated converter crash"}]
    assert main(["verify", "--exports", str(export_copy)]) == 0


def test_force_replaces_and_cleans_old_generation(export_copy, data_dir):
    old = _manifest(export_copy)["generation"]
    manifest = export(ExportConfig(exports=export_copy, data_dir=data_dir, force=True, verbose=False,
                                   calibration_samples=50, calibration_method="entropy"),
                      exporters.select("onnx", ("int8",)))
    assert [e["variant"] for e in manifest["artifacts"]] == ["onnx-int8"]
    assert manifest["artifacts"][0]["calibration"]["method"] == "entropy"
    dirs = sorted(p.name for p in export_copy.iterdir() if p.is_dir() and not p.is_symlink())
    assert dirs == [f"artifacts-{manifest['generation']}"] and old not in dirs[0]
    # the file to ship under a path that does not change: DIR/current follows the live generation
    assert (export_copy / "current").resolve() == (export_copy / dirs[0]).resolve()
    assert (export_copy / "current" / "onnx-int8.onnx").is_file()


def test_a_copied_current_directory_is_replaced_not_left_stale(quick_export, tmp_path, data_dir, capsys):
    """An export copied as people copy folders (shutil.copytree follows links: DIR/current becomes a real
    directory holding the old generation's files): the next export replaces it by the link to the new
    generation and says so, rather than succeed while DIR/current keeps the previous files. A directory
    there holding files no export wrote is refused before any work, and left as it was."""
    copy = tmp_path / "copied"
    shutil.copytree(quick_export, copy)  # symlinks=False: current/ is now a directory
    assert (copy / "current").is_dir() and not (copy / "current").is_symlink()
    old = (copy / "current" / "onnx-int8.onnx").read_bytes()
    manifest = export(ExportConfig(exports=copy, data_dir=data_dir, force=True, verbose=False, calibration_samples=20),
                      exporters.select("onnx", ("int8",)))
    assert "was a directory (a copy of an earlier generation): replaced" in capsys.readouterr().err
    assert (copy / "current").is_symlink()
    assert (copy / "current").resolve() == (copy / f"artifacts-{manifest['generation']}").resolve()
    assert (copy / "current" / "onnx-int8.onnx").read_bytes() != old  # 20 calibration images: other bytes

    (copy / "current").unlink()
    (copy / "current").mkdir()
    (copy / "current" / "my-notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="my-notes.txt"):
        export(ExportConfig(exports=copy, data_dir=data_dir, force=True, verbose=False),
               exporters.select("onnx", ("int8",)))
    assert (copy / "current" / "my-notes.txt").read_text() == "mine"


def test_labels_file_and_the_files_to_ship_in_the_report(quick_export):
    """labels.txt holds the class names in output order; the report names each file under current/ with its
    input/output dtype, scale and zero point."""
    manifest = _manifest(quick_export)
    labels = (quick_export / "current" / "labels.txt").read_text().splitlines()
    assert labels == [str(k) for k in range(10)] and manifest["labels"]["classes"] == 10
    from toolkit.report import shipping_table

    text = "\n".join(shipping_table(manifest, {"variants": {}}))
    entry = _entry(quick_export, "tflite-int8")
    scale, zero = entry["inputs"][0]["scale"], entry["inputs"][0]["zero_point"]
    assert "`current/tflite-int8.tflite`" in text and f"int8 Nx28x28x1, scale {scale:.6g}, zero point {zero}" in text
    assert "`current/labels.txt`" in text


def test_quantized_inputs_round_trip(quick_export, mnist):
    """The int8 runner quantizes with the tensor's own scale: 0 and 1 map to the int8 ends."""
    entry = _entry(quick_export, "tflite-int8")
    runner = runner_for("tflite", quick_export / entry["path"])
    q = runner.prepare(np.array([[[[0.0]] * 28] * 28, [[[1.0]] * 28] * 28], dtype=np.float32))
    assert q.dtype == np.int8
    assert q[0].min() == -128 and q[1].max() == 127
