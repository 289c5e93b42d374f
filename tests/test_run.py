"""End to end: `toolkit run --quick`, and the report's numbers against the files it wrote. The pipeline runs on
the small MLP (--arch mlp): every stage and file is the same as for the seed CNN at a fraction of the default
suite's time; the seed CNN's quick run is README's first command (tests/test_readme.py, slow), and its training,
export and parity are the session fixtures most other tests use."""

import json
import re

import pytest

from toolkit.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, data_dir):
    exports = tmp_path_factory.mktemp("run")
    rc = main(["run", "--quick", "--arch", "mlp", "--exports", str(exports), "--data-dir", str(data_dir)])
    return rc, exports


def test_quick_run_succeeds_and_writes_everything(quick_run):
    rc, exports = quick_run
    assert rc == 0
    for name in ("model.keras", "train.json", "manifest.json", "parity.json", "parity.md",
                 "parity-disagreements.png", "bench.json", "bench.csv", "bench.md", "bench-latency.png",
                 "bench-tradeoff.png", "report.md"):
        assert (exports / name).is_file(), name
    train = json.loads((exports / "train.json").read_text())
    assert train["hyperparameters"]["epochs"] == 1 and train["data"]["train_images"] == 12_000


def test_report_numbers_match_parity_and_bench(quick_run):
    _, exports = quick_run
    report = (exports / "report.md").read_text()
    parity = json.loads((exports / "parity.json").read_text())
    bench = json.loads((exports / "bench.json").read_text())
    train = json.loads((exports / "train.json").read_text())
    assert f"**test accuracy {train['test_accuracy']:.2%}**" in report
    assert f"**{parity['reference']['accuracy']:.2%}**" in report
    threads = max(r["threads"] for r in bench["results"])
    for name, v in parity["variants"].items():
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2].split(" (")[0] == f"{v['accuracy']:.2%}"  # tflite-micro adds its sample size
        assert cells[3] == f"{v['accuracy_diff_points']:+.2f}"
        assert cells[5] == f"{v['agreement']:.2%}"
        assert cells[6] == {"pass": "pass", "fail": "**FAIL**", "inconclusive": "**INCONCLUSIVE**"}[v["verdict"]]
        b1 = next(r for r in bench["results"] if r["variant"] == name and r["batch_size"] == 1
                  and r["threads"] in (threads, 1) and (r["threads"] == threads or r["runtime"] == "tflm"))
        assert f"{b1['p50_ms']:.3f}" in cells
    assert "## Which variant to ship" in report
    assert re.search(r"\*\*Lowest latency \(batch 1, \d thread\(s\)\)\*\*: (a tie between )?`[a-z0-9-]+`", report)
    assert "(bench-latency.png)" in report


def test_skip_train_reuses_model_with_force_and_export_options(quick_run, data_dir, tmp_path, capsys):
    """Last in this module: it replaces the quick run's export. Without --force, run refuses; with it and
    export's own options, only the chosen variant is exported, and --json writes the summary."""
    _, exports = quick_run
    before = (exports / "model.keras").read_bytes()
    argv = ["run", "--quick", "--skip-train", "--skip-bench", "--exports", str(exports), "--data-dir", str(data_dir),
            "--format", "tflite", "--quantize", "int8"]
    assert main(argv) == 2 and "--force" in capsys.readouterr().err
    assert main([*argv, "--force", "--json", str(tmp_path / "run.json")]) == 0
    assert (exports / "model.keras").read_bytes() == before
    manifest = json.loads((exports / "manifest.json").read_text())
    assert [e["variant"] for e in manifest["artifacts"]] == ["tflite-int8"]
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["command"] == "run" and set(summary["variants"]) == {"tflite-int8"}
    assert summary["variants"]["tflite-int8"]["verdict"] in ("pass", "inconclusive", "fail")


def test_skip_train_without_model_is_exit_3(tmp_path, capsys):
    assert main(["run", "--skip-train", "--exports", str(tmp_path)]) == 3
    assert "model.keras not found" in capsys.readouterr().err
