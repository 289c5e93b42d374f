"""`toolkit gate` on real exports, the pytest plugin, and jobs side by side on one export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from toolkit import artifacts
from toolkit.cli import main
from toolkit.provenance import sha256_file

REPO = Path(__file__).resolve().parent.parent
BENCH = ["--variants", "tflite-int8", "onnx", "--runtimes", "litert", "onnxruntime", "--batch-sizes", "1,8",
         "--threads", "1", "--min-seconds", "0.5", "--warmup-seconds", "0.1", "--no-plots"]
LATENCY = ["--ship", "tflite-int8", "--latency-rounds", "3"]  # the default is 5 rounds of the int8 variants


@pytest.fixture(scope="module")
def baseline(quick_parity, tmp_path_factory, data_dir):
    d = tmp_path_factory.mktemp("gate") / "baseline"
    # parity of every variant, written by the command's own writer (conftest.py): the pytest plugin then finds
    # parity.json current and complete and does not run it again
    shutil.copytree(quick_parity, d, symlinks=True)
    assert json.loads((d / "parity.json").read_text())["passed"] is True
    assert main(["bench", "--exports", str(d), "--data-dir", str(data_dir), *BENCH]) == 0
    return d


def _gate(baseline: Path, new: Path, tmp: Path, *extra: str, latency: list[str] | None = None) -> tuple[int, dict]:
    rc = main(["gate", "--baseline", str(baseline), "--exports", str(new), "--json", str(tmp / "gate.json"),
               "--junit", str(tmp / "junit.xml"), *(["--latency-rounds", "0"] if latency is None else latency),
               *extra])
    return rc, json.loads((tmp / "gate.json").read_text())


def _failed(doc: dict) -> set[tuple[str, str]]:
    return {(c["kind"], c["name"]) for c in doc["checks"] if c["status"] == "fail"}


def test_an_export_against_a_copy_of_itself_passes_tflm_included(baseline, tmp_path):
    """A byte-for-byte copy: every file is the same file (accuracy passes without sampling, the 1,000-image
    TFLM sample included), and the shipped variant, re-measured against itself, is not a regression."""
    copy = shutil.copytree(baseline, tmp_path / "copy", symlinks=True)
    rc, doc = _gate(baseline, copy, tmp_path, latency=LATENCY)
    assert rc == 0 and not _failed(doc), [c["detail"] for c in doc["checks"] if c["status"] != "pass"]
    kinds = {c["kind"] for c in doc["checks"]}
    assert kinds == {"presence", "parity", "accuracy", "latency", "stored latency"}
    accuracy = {c["name"]: c for c in doc["checks"] if c["kind"] == "accuracy"}
    assert set(accuracy) == {e["variant"] for e in artifacts.read_manifest(baseline)["artifacts"]}
    assert all(c["status"] == "pass" and "same file" in c["detail"] for c in accuracy.values())
    (latency,) = [c for c in doc["checks"] if c["kind"] == "latency"]
    assert latency["name"] == "tflite-int8/litert/batch 1/1 thr" and latency["status"] in ("pass", "inconclusive")
    assert latency["values"]["rounds"] == 3 and 0.5 < latency["values"]["ratio"] < 2
    assert all(c["status"] == "info" for c in doc["checks"] if c["kind"] == "stored latency")
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(doc["checks"]) == int(suite.get("tests")) and suite.get("failures") == "0"
    assert {c.get("name") for c in cases} == {c["name"] for c in doc["checks"]}


def _slower_tflite(model_path: Path, out: Path) -> None:
    """The same classifier as a float TFLite file that also computes a wide dense branch (784 -> 4096 -> 1024,
    about 7M multiply-adds, near the CNN's own cost) whose output is scaled by 1e-9 before it joins the logits:
    the same predictions, genuinely more work on any CPU. (The float file alone is no regression everywhere: on
    an AVX2-only CPU LiteRT runs this CNN's float and int8 files at batch 1 within about 10% of each other.)"""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(model_path, compile=False)
    x = keras.Input(model.input_shape[1:])
    branch = keras.layers.Dense(4096, activation="relu")(keras.layers.Flatten()(x))
    branch = keras.layers.Dense(model.output_shape[-1])(keras.layers.Dense(1024, activation="relu")(branch))
    slower = keras.Model(x, keras.layers.Add()([model(x), keras.layers.Rescaling(1e-9)(branch)]))
    out.write_bytes(tf.lite.TFLiteConverter.from_keras_model(slower).convert())


def test_a_slower_shipped_file_fails_on_latency(baseline, tmp_path):
    """A real regression: the new export's tflite-int8 is replaced by a float file of the same classifier that
    also computes a wide dense branch (about twice the work), re-measured against the baseline's in turns."""
    new = shutil.copytree(baseline, tmp_path / "new", symlinks=True)
    manifest = artifacts.read_manifest(new)
    entry = next(e for e in manifest["artifacts"] if e["variant"] == "tflite-int8")
    _slower_tflite(new / "model.keras", new / entry["path"])
    entry.update(bytes=(new / entry["path"]).stat().st_size, sha256=sha256_file(new / entry["path"]))
    artifacts.atomic_write_json(new / "manifest.json", manifest)
    rc, doc = _gate(baseline, new, tmp_path, latency=LATENCY)
    assert rc == 4 and ("latency", "tflite-int8/litert/batch 1/1 thr") in _failed(doc), \
        [c["detail"] for c in doc["checks"] if c["status"] != "pass"]
    (latency,) = [c for c in doc["checks"] if c["kind"] == "latency"]
    assert latency["values"]["ratio_interval"][0] > 1.1
    accuracy = next(c for c in doc["checks"] if c["kind"] == "accuracy" and c["name"] == "tflite-int8")
    assert accuracy["status"] == "pass"  # the predictions are the same classifier's: only the time regressed


def _replace_tflite_int8(baseline: Path, new: Path, source: Path) -> None:
    manifest = artifacts.read_manifest(new)
    entry = next(e for e in manifest["artifacts"] if e["variant"] == "tflite-int8")
    other = next(e for e in artifacts.read_manifest(source)["artifacts"] if e["variant"] == "tflite-int8")
    shutil.copyfile(source / other["path"], new / entry["path"])
    entry.update(bytes=other["bytes"], sha256=sha256_file(new / entry["path"]), calibration=other["calibration"])
    artifacts.atomic_write_json(new / "manifest.json", manifest)


SMALL_DROP = 5  # test images newly wrong (none newly right) of 10,000: 0.05 points


def _pin_predictions(baseline: Path, new: Path, variant: str, newly_wrong: int) -> None:
    """The new export's saved per-image predictions of ``variant`` (what the gate compares): the baseline's,
    except the first ``newly_wrong`` images the baseline classified right, now wrong."""
    import numpy as np

    def saved(exports: Path) -> tuple[Path, dict]:
        path = exports / json.loads((exports / "parity.json").read_text())["predictions_file"]
        with np.load(path) as z:
            return path, {k: z[k] for k in z.files}

    _, old = saved(baseline)
    path, arrays = saved(new)
    assert np.array_equal(old["labels"], arrays["labels"])
    pred = old[f"variant:{variant}"].copy()
    right = np.flatnonzero(pred == old["labels"])[:newly_wrong]
    pred[right] = (old["labels"][right] + 1) % 10
    arrays[f"variant:{variant}"] = pred
    np.savez_compressed(path, **arrays)


def test_a_small_drop_is_inconclusive_and_a_real_one_fails(baseline, tmp_path, data_dir, capsys):
    """A new tflite-int8 (another file: calibrated on 1 training image instead of 200) whose saved predictions
    lose SMALL_DROP images in 10,000 against the baseline's and gain none: the drop (0.05 points) is within the
    0.1-point margin but its interval straddles it, so the gate says inconclusive (exit 0; 4 with --strict) and
    how many images would decide. The predictions are pinned because a real 1-image calibration's loss depends
    on the machine (13 newly wrong and 5 newly right measured on one, inconclusive; enough to fail on another).
    A tflite-int8 of a far weaker model (softmax regression on 2,000 images) fails."""
    weak = tmp_path / "weak-export"
    weak.mkdir()
    shutil.copy(baseline / "model.keras", weak / "model.keras")
    assert main(["export", "--exports", str(weak), "--data-dir", str(data_dir), "--format", "tflite", "--quantize",
                 "int8", "--calibration-samples", "1"]) == 0
    new = shutil.copytree(baseline, tmp_path / "new", symlinks=True)
    _replace_tflite_int8(baseline, new, weak)
    # only the replaced file is re-checked (the others are the baseline's, their results current)
    assert main(["parity", "--exports", str(new), "--data-dir", str(data_dir), "--variants", "tflite-int8"]) == 0
    _pin_predictions(baseline, new, "tflite-int8", SMALL_DROP)
    capsys.readouterr()
    rc, doc = _gate(baseline, new, tmp_path)
    check = next(c for c in doc["checks"] if c["kind"] == "accuracy" and c["name"] == "tflite-int8")
    v = check["values"]
    assert (v["newly_wrong"], v["newly_right"], v["images"]) == (SMALL_DROP, 0, 10_000)
    assert v["drop_points"] == pytest.approx(SMALL_DROP / 100)
    lo, hi = v["drop_interval_points"]
    assert lo < 0.1 < hi  # straddles the margin
    assert check["status"] == "inconclusive" and rc == 0 and "images would decide it" in check["detail"]
    assert "INCONCLUSIVE" in capsys.readouterr().err
    assert _gate(baseline, new, tmp_path, "--strict")[0] == 4
    other = tmp_path / "other-model"
    assert main(["train", "--arch", "softmax", "--epochs", "1", "--train-limit", "2000", "--data-dir", str(data_dir),
                 "--exports", str(other), "--quiet"]) == 0
    assert main(["export", "--exports", str(other), "--data-dir", str(data_dir), "--format", "tflite", "--quantize",
                 "int8", "--quiet"]) == 0
    worse = shutil.copytree(baseline, tmp_path / "worse", symlinks=True)
    _replace_tflite_int8(baseline, worse, other)
    # against the baseline's Keras model, the weak model's file fails its own parity gates too
    assert main(["parity", "--exports", str(worse), "--data-dir", str(data_dir), "--variants", "tflite-int8",
                 "--quiet"]) == 4
    rc, doc = _gate(baseline, worse, tmp_path)
    assert rc == 4 and ("accuracy", "tflite-int8") in _failed(doc)
    check = next(c for c in doc["checks"] if c["kind"] == "accuracy" and c["name"] == "tflite-int8")
    assert check["values"]["drop_interval_points"][0] > 0.1 and check["values"]["newly_wrong"] > 0


def test_stored_bench_numbers_are_information_never_gated(baseline, tmp_path, data_dir):
    """Two stored bench runs (here the second 3x slower, as if from another machine) are shown, not gated:
    within-run intervals say nothing about the next run on a shared machine."""
    new = shutil.copytree(baseline, tmp_path / "new", symlinks=True)
    bench = json.loads((new / "bench.json").read_text())
    bench["provenance"]["machine"]["cpu"] = "Some Other CPU"
    for row in bench["results"]:
        row["p50_ms"] *= 3
    (new / "bench.json").write_text(json.dumps(bench))
    rc, doc = _gate(baseline, new, tmp_path)
    stored = [c for c in doc["checks"] if c["kind"] == "stored latency"]
    assert rc == 0 and len(stored) == 2 * 2 and all(c["status"] == "info" for c in stored)
    assert all("3.00x" in c["detail"] and "another machine" in c["detail"] for c in stored)


def test_budgets_one_byte_below_fail(baseline, tmp_path, capsys):
    entry = next(e for e in artifacts.read_manifest(baseline)["artifacts"] if e["variant"] == "tflite-int8")
    micro = next(e for e in artifacts.read_manifest(baseline)["artifacts"] if e["variant"] == "tflite-micro")
    rc, doc = _gate(baseline, baseline, tmp_path, "--max-bytes", f"tflite-int8={entry['bytes']}",
                    "--max-arena", str(micro["arena"]["arena_bytes"]))
    assert rc == 0
    rc, doc = _gate(baseline, baseline, tmp_path, "--max-bytes", f"tflite-int8={entry['bytes'] - 1}",
                    "--max-arena", str(micro["arena"]["arena_bytes"] - 1))
    assert rc == 4 and _failed(doc) == {("size", "tflite-int8"), ("memory", "tflite-micro arena")}
    assert "gate check(s) failed" in capsys.readouterr().err


def test_a_disappeared_variant_and_a_failing_one_fail(baseline, tmp_path, data_dir):
    from test_parity import _break_input_scale

    new = shutil.copytree(baseline, tmp_path / "new", symlinks=True)
    manifest = artifacts.read_manifest(new)
    manifest["artifacts"] = [e for e in manifest["artifacts"] if e["variant"] != "tflite-fp16"]
    artifacts.atomic_write_json(new / "manifest.json", manifest)
    _break_input_scale(new)
    assert main(["parity", "--exports", str(new), "--data-dir", str(data_dir), "--variants", "onnx"]) == 4
    rc, doc = _gate(baseline, new, tmp_path)
    assert rc == 4
    # inputs x255 barely move a ReLU network's argmax: its own agreement gate catches it, not accuracy
    assert {("presence", "tflite-fp16"), ("parity", "onnx")} <= _failed(doc)


# ----------------------------------------------------------------------------- the latency statistic
# ms per round: the machine's speed drifts between rounds (fresh processes), which the per-round ratio cancels
ROUND_MS = (1.0, 1.3, 0.8, 1.1, 0.9)


def _tiny_export(directory: Path, content: bytes) -> dict:
    directory.mkdir()
    (directory / "m.tflite").write_bytes(content)
    entry = {"variant": "tflite-int8", "format": "tflite", "quantization": "int8", "path": "m.tflite",
             "bytes": len(content), "sha256": sha256_file(directory / "m.tflite")}
    artifacts.atomic_write_json(directory / "manifest.json", {"artifacts": [entry]})
    artifacts.atomic_write_json(directory / "parity.json", {"variants": {}})
    return {"artifacts": [entry]}


@pytest.fixture
def interleaved(monkeypatch, tmp_path):
    """Two exports of one tiny tflite-int8 file each (baseline ``old``, new ``new``), and toolkit.bench's
    re-measurement replaced by samples the test sets: ``use(ratios)`` sets new p50 / old p50 per round,
    ``checks(ratios, **settings)`` runs the gate's latency checks on them; ``calls`` records what was timed."""
    from types import SimpleNamespace

    import numpy as np

    from toolkit import inputs, interleaved
    from toolkit.gate import GateConfig, remeasured_latency_checks

    old, new = _tiny_export(tmp_path / "old", b"old model"), _tiny_export(tmp_path / "new", b"new model")
    fake = SimpleNamespace(ratios=None, calls=[], old=tmp_path / "old", new=tmp_path / "new")

    def run_interleaved(runtime, paths, threads, batch, images, *, rounds, block_seconds, **kw):
        fake.calls.append({"runtime": runtime, "paths": [Path(p).parent.name for p in paths], "threads": threads,
                           "batch": batch, "rounds": rounds})
        out = []
        for base, ratio in zip(ROUND_MS[:rounds], fake.ratios[:rounds], strict=True):
            o = round(base * 1e6)  # ns; a slow tail far above the p50 in the old file's samples (a mean would move)
            n = round(base * ratio * 1e6)
            out.append([[o - 30_000, o - 10_000, o, o + 20_000, 3 * o], [n - 20_000, n - 10_000, n, n + 10_000,
                                                                         n + 30_000]])
        return out

    monkeypatch.setattr(interleaved, "run_interleaved", run_interleaved)
    monkeypatch.setattr(inputs, "test_images", lambda cfg, manifest, count: np.zeros((count, 4), np.float32))

    def use(ratios):
        fake.ratios = tuple(ratios)

    def checks(ratios, **settings):
        use(ratios)
        cfg = GateConfig(baseline=fake.old, exports=fake.new, latency_rounds=len(ratios), verbose=False, **settings)
        return remeasured_latency_checks(cfg, old, new)

    fake.use, fake.checks = use, checks
    return fake


def _expected_ratio(ratios, confidence: float) -> tuple[float, tuple[float, float]]:
    """By hand: the rounds' log p50 ratios, their mean and a Student's t interval, back to ratios."""
    import math

    from scipy.stats import t

    p50 = [(round(b * 1e6), round(b * r * 1e6)) for b, r in zip(ROUND_MS[:len(ratios)], ratios, strict=True)]
    logs = [math.log(n / o) for o, n in p50]
    k = len(logs)
    mean = sum(logs) / k
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (k - 1))
    half = t.ppf(1 - (1 - confidence) / 2, k - 1) * sd / math.sqrt(k)
    return math.exp(mean), (math.exp(mean - half), math.exp(mean + half))


@pytest.mark.parametrize("ratios, status", [
    ((1.48, 1.52, 1.50, 1.49, 1.51), "fail"),  # a clear 1.5x slowdown: the whole interval above 1.1
    ((1.0, 0.99, 1.01, 1.0, 1.0), "pass"),  # the same speed: the whole interval below 1.1
    ((1.0, 1.2, 1.05, 1.15, 1.1), "inconclusive"),  # noisy, around the bound: the interval straddles 1.1
])
def test_latency_check_is_a_t_interval_on_the_rounds_p50_ratios(interleaved, ratios, status):
    """toolkit/gate.py's re-measured latency: per round the ratio of the two files' p50s (medians: the old
    file's slow tail does not move them), a Student's t interval on the rounds' mean log-ratio, judged by
    ratio_at_most against 1 + --latency-margin."""
    (check,) = interleaved.checks(ratios)
    ratio, interval = _expected_ratio(ratios, 0.95)
    assert check.kind == "latency" and check.name == "tflite-int8/litert/batch 1/1 thr"
    assert check.status == status, check.detail
    v = check.values
    assert v["ratio"] == pytest.approx(ratio, rel=1e-9) and v["ratio_interval"] == pytest.approx(interval, rel=1e-9)
    assert v["confidence"] == 0.95 and v["bound"] == pytest.approx(1.1) and v["rounds"] == 5
    assert v["old_p50_ms_per_round"] == pytest.approx(ROUND_MS)
    assert v["new_p50_ms_per_round"] == pytest.approx([b * r for b, r in zip(ROUND_MS, ratios, strict=True)])
    assert v["samples_per_round"] == [[5, 5]] * 5
    verdict = v["verdict"]
    assert (verdict["metric"], verdict["op"], verdict["bound"]) == ("p50_ratio_new_over_old", "<=", pytest.approx(1.1))
    assert verdict["status"] == status and verdict["interval"] == pytest.approx(interval, rel=1e-9)
    assert {"fail": interval[0] > 1.1, "pass": interval[1] <= 1.1, "inconclusive": interval[0] <= 1.1 < interval[1]
            }[status]  # the scenario is what its name says, by the hand computation too
    if status == "inconclusive":
        assert "inconclusive" in check.detail
    # baseline first, then the new file, timed by the variant's own runtime in fresh processes
    assert interleaved.calls == [{"runtime": "litert", "paths": ["old", "new"], "threads": 1, "batch": 1, "rounds": 5}]


def test_latency_checks_together_hold_a_family_wise_error(interleaved):
    """Two settings re-measured (batch 1 and 8): each interval at 1 - 0.05/2, wider than at 95%."""
    ratios = (1.0, 1.2, 1.05, 1.15, 1.1)
    checks = interleaved.checks(ratios, latency_batch_sizes=(1, 8))
    assert [c.name for c in checks] == ["tflite-int8/litert/batch 1/1 thr", "tflite-int8/litert/batch 8/1 thr"]
    _, interval = _expected_ratio(ratios, 0.975)
    _, single = _expected_ratio(ratios, 0.95)
    for c in checks:
        assert c.values["confidence"] == 0.975 and c.values["ratio_interval"] == pytest.approx(interval, rel=1e-9)
    assert interval[0] < single[0] and interval[1] > single[1]


def test_latency_margin_moves_the_bound(interleaved):
    slow = (1.48, 1.52, 1.50, 1.49, 1.51)
    (check,) = interleaved.checks(slow, latency_margin=0.6)
    assert check.status == "pass" and check.values["bound"] == pytest.approx(1.6)
    (check,) = interleaved.checks((1.0, 0.99, 1.01, 1.0, 1.0), latency_margin=0.0)  # at most 1.0: straddled
    assert check.status == "inconclusive"


def test_a_file_the_runtime_cannot_time_is_incomplete_not_a_verdict(interleaved, monkeypatch):
    from toolkit import interleaved as timer

    def refuse(*args, **kw):
        raise RuntimeError("Didn't find op for builtin opcode\nmore")

    monkeypatch.setattr(timer, "run_interleaved", refuse)
    (check,) = interleaved.checks((1.0, 1.0, 1.0))
    assert (check.kind, check.status) == ("incomplete", "incomplete")
    assert check.detail == "could not re-measure it: Didn't find op for builtin opcode"


@pytest.mark.parametrize("ratios, status, rc, strict_rc", [((1.48, 1.52, 1.50, 1.49, 1.51), "fail", 4, 4),
                                                           ((1.0, 0.99, 1.01, 1.0, 1.0), "pass", 0, 0),
                                                           ((1.0, 1.2, 1.05, 1.15, 1.1), "inconclusive", 0, 4)])
def test_the_gate_exits_on_the_latency_verdict(interleaved, ratios, status, rc, strict_rc):
    """Through `toolkit gate`: a latency fail exits 4, a pass 0, an inconclusive 0 (4 with --strict)."""
    interleaved.use(ratios)
    gate = ["gate", "--baseline", str(interleaved.old), "--exports", str(interleaved.new), "--latency-rounds", "5",
            "--quiet"]
    assert main(gate) == rc
    doc = json.loads((interleaved.new / "gate.json").read_text())
    assert [(c["kind"], c["status"]) for c in doc["checks"]] == [("presence", "pass"), ("latency", status)]
    assert doc["verdict"] == status
    assert main([*gate, "--strict"]) == strict_rc


# ----------------------------------------------------------------------------- the pytest plugin
@pytest.mark.slow  # ~30 s: the plugin's item listing (its A/A run against a copy stays in the default suite)
def test_pytest_plugin_one_item_per_variant_and_gate(pytester, export_copy, data_dir):
    from test_parity import _break_input_scale

    _break_input_scale(export_copy)  # onnx now fails its parity gates; the others pass
    result = pytester.runpytest("--toolkit-exports", str(export_copy), "--toolkit-data-dir", str(data_dir.resolve()),
                                "-p", "no:cacheprovider", "-rA")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 8 and outcomes.get("failed", 0) == 2  # onnx: agreement and logit diff
    result.stdout.fnmatch_lines(["PASSED*toolkit::parity::tflite-int8::accuracy_loss_points"])
    result.stdout.fnmatch_lines(["FAILED*toolkit::parity::onnx::agreement_percent*"])


def test_pytest_plugin_passes_a_copy_of_an_export_against_itself(pytester, baseline, tmp_path, data_dir):
    """The plugin asks the gate's questions with the gate's rules: a byte-for-byte copy, TFLM included, has no
    failing item (the same file passes; the re-measured shipped variant is no regression)."""
    copy = shutil.copytree(baseline, tmp_path / "copy", symlinks=True)
    result = pytester.runpytest("--toolkit-exports", str(copy), "--toolkit-baseline", str(baseline),
                                "--toolkit-data-dir", str(data_dir.resolve()), "--toolkit-latency-rounds", "0",
                                "-p", "no:cacheprovider", "-rA")  # latency: test_an_export_against_a_copy...
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("passed", 0) >= 10, result.stdout.lines[-30:]
    result.stdout.fnmatch_lines(["PASSED*toolkit::gate::accuracy::tflite-micro*"])


# ----------------------------------------------------------------------------- jobs side by side
def _toolkit(*args: str, data_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOOLKIT_DATA_DIR": str(data_dir)}
    return subprocess.Popen([sys.executable, "-m", "toolkit", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"process ended before printing {text!r}")
    raise AssertionError(f"no {text!r} within {timeout} s")


@pytest.mark.slow  # ~60 s: an export in another process while gate and parity read (tests/test_reliability.py keeps the lock tests)
def test_readers_finish_on_their_generation_while_an_export_replaces_it(export_copy, data_dir, tmp_path):
    old = artifacts.read_manifest(export_copy)["generation"]
    parity = _toolkit("parity", "--exports", str(export_copy), "--variants", "tflite-micro", "--micro-images", "4000",
                      "--json", str(tmp_path / "p.json"), data_dir=data_dir)
    bench = _toolkit("bench", "--exports", str(export_copy), "--variants", "tflite-int8", "--runtimes", "litert",
                     "--batch-sizes", "1", "--threads", "1", "--min-seconds", "20", "--no-plots",
                     "--json", str(tmp_path / "b.json"), data_dir=data_dir)
    _wait_for_line(parity, "parity of 1 variant(s)")
    _wait_for_line(bench, "benchmarking")
    export = _toolkit("export", "--exports", str(export_copy), "--force", "--format", "tflite", data_dir=data_dir)
    assert export.wait(timeout=300) == 0, export.stderr.read()
    # parity (4,000 images under TFLM, minutes) is still reading the old generation; the 20 s bench may have
    # ended on a loaded machine, where the export is slower: it must have read the old generation all the same
    assert parity.poll() is None
    new = artifacts.read_manifest(export_copy)["generation"]
    assert new != old and (export_copy / f"artifacts-{old}").is_dir()  # kept for its readers
    assert parity.wait(timeout=300) == 0, parity.stderr.read()
    assert bench.wait(timeout=300) == 0, bench.stderr.read()
    assert json.loads((tmp_path / "p.json").read_text())["export_generation"] == old
    assert json.loads((tmp_path / "b.json").read_text())["export_generation"] == old
    assert main(["export", "--exports", str(export_copy), "--force", "--format", "onnx"]) == 0  # cleans up
    dirs = sorted(p.name for p in export_copy.iterdir() if p.is_dir() and not p.is_symlink())
    assert dirs == [f"artifacts-{artifacts.read_manifest(export_copy)['generation']}"]


def test_two_exports_at_once_leave_one_consistent_export(export_copy, data_dir):
    # two variants each, none needing calibration: the lock is what is tested here, not int8
    a = _toolkit("export", "--exports", str(export_copy), "--force", "--format", "tflite", "--quantize", "none",
                 "fp16", data_dir=data_dir)
    b = _toolkit("export", "--exports", str(export_copy), "--force", "--format", "onnx", "openvino", "--quantize",
                 "none", "fp16", data_dir=data_dir)
    assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0, (a.stderr.read(), b.stderr.read())
    assert main(["verify", "--exports", str(export_copy)]) == 0
    names = sorted(p.name for p in export_copy.iterdir() if p.is_dir() and not p.is_symlink())
    assert len(names) == 1 and names[0].startswith("artifacts-")  # no staging, no stale generation
    variants = [e["variant"] for e in artifacts.read_manifest(export_copy)["artifacts"]]
    assert set(variants) in ({"tflite", "tflite-fp16"}, {"onnx", "openvino", "openvino-fp16"})  # one of them, whole


def test_an_openvino_ir_with_other_weights_is_not_the_same_file():
    """An OpenVINO IR is its .xml (the manifest entry's sha256) and its .bin (a companion): two IRs of one
    architecture with other weights have the same .xml. The gate compares both, so such a pair is compared
    image by image, never passed as "the same file" (found by the A/A test of benchmarks/gate.py: a permuted
    model's IR kept its .xml)."""
    from toolkit.gate import accuracy_checks, file_identities

    def manifest(bin_sha: str) -> dict:
        return {"artifacts": [{"variant": "openvino", "sha256": "x" * 64,
                               "companions": [{"path": "openvino.bin", "sha256": bin_sha}]},
                              {"variant": "tflite-int8", "sha256": "t" * 64,
                               "companions": [{"path": "tflite-int8.plain.tflite", "sha256": bin_sha,
                                               "role": "plain-int8"}]}]}

    old, new = manifest("a" * 64), manifest("b" * 64)
    assert file_identities(old)["openvino"] != file_identities(new)["openvino"]
    assert file_identities(old)["tflite-int8"] == file_identities(new)["tflite-int8"]  # the plain model is aside
    labels = np.arange(10_000) % 10
    parity = {"variants": {"openvino": {"sha256": "x" * 64}}, "dataset": {"fingerprint": {"sha256": "d"}}}
    preds = {"labels": labels, "variant:openvino": labels.copy()}
    (check,) = accuracy_checks(parity, parity, preds, preds, 0.1)  # by the parity records alone: "the same file"
    assert "same file" in check.detail
    (check,) = accuracy_checks(parity, parity, preds, preds, 0.1, file_identities(old), file_identities(new))
    assert "same file" not in check.detail and check.values["newly_wrong"] == 0 and check.status == "pass"


def test_the_npu_checks_pass_a_copy_and_fail_an_sram_budget(baseline, tmp_path):
    """With both exports compiled for an Ethos-U55 (`toolkit footprint --npu`): a copy passes the placement check;
    the SRAM Vela estimates fails a budget below it and passes one above it."""
    pytest.importorskip("ethosu.vela", reason="ethos-u-vela (the [npu] extra) is not installed")
    base = shutil.copytree(baseline, tmp_path / "base", symlinks=True)
    assert main(["footprint", "--exports", str(base), "--npu", "ethos-u55-128", "--quiet"]) == 0
    new = shutil.copytree(base, tmp_path / "new", symlinks=True)
    sram = json.loads((new / "footprint.json").read_text())["npu"]["rows"][0]["sram_kib"] * 1024
    rc, doc = _gate(base, new, tmp_path, "--max-npu-sram", f"ethos-u55-128={int(sram) + 1024}")
    npu = {c["name"]: c for c in doc["checks"] if c["kind"] == "npu"}
    assert rc == 0 and npu["tflite-int8 on ethos-u55-128"]["status"] == "pass"
    assert npu["tflite-int8 on ethos-u55-128 sram"]["status"] == "pass"
    rc, doc = _gate(base, new, tmp_path, "--max-npu-sram", f"ethos-u55-128={int(sram) - 1024}")
    assert rc == 4 and _failed(doc) == {("npu", "tflite-int8 on ethos-u55-128 sram")}
    rc, doc = _gate(base, new, tmp_path, "--max-npu-ms", "ethos-u85-256=5")
    assert rc == 4 and "toolkit footprint --npu ethos-u85-256" in next(
        c["detail"] for c in doc["checks"] if c["kind"] == "npu" and c["status"] == "fail")
