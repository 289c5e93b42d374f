"""Dataset sources as plugins: found by scanning toolkit/datasets/, each declaring its own options; no other
file of the package names a source or a source's option (adding a source is adding a module)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from toolkit import datasets
from toolkit.cli import build_parser
from toolkit.errors import DataError

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"


def test_every_source_module_registers_itself():
    known = datasets.sources()
    assert list(known) == ["mnist", "npz", "folder"]
    modules = {p.stem for p in (PACKAGE / "datasets").glob("*.py") if p.stem not in ("__init__", "base")}
    assert modules == set(known)
    assert [o.flag for o in datasets.source_options()] == ["--test-fraction"]


def test_no_other_file_names_a_source_or_its_options():
    names = set(datasets.sources())
    for option in datasets.source_options():
        names |= {option.flag, option.dest}
    naming = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("datasets/"):
            continue
        found = {node.value for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names}
        if found:
            naming[rel] = found
    assert naming == {}, naming


@pytest.mark.parametrize("command", ["train", "export", "parity", "bench", "run"])
def test_every_command_with_dataset_takes_each_sources_options(command):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    flags = {o for a in sub._actions for o in a.option_strings}
    assert "--dataset" in flags and {o.flag for o in datasets.source_options()} <= flags
    args = parser.parse_args([command, "--test-fraction", "0.3"] + (["--model", "m.keras"] if command == "run" else []))
    from toolkit.cli.common import dataset_options

    assert dataset_options(args) == (("test_fraction", 0.3),)


def test_a_source_gets_only_its_own_options(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 255, (20, 8, 8), np.uint8), y_train=np.arange(20) % 2,
             x_test=rng.integers(0, 255, (10, 8, 8), np.uint8), y_test=np.arange(10) % 2)
    data = datasets.open_dataset(path, test_fraction=0.5)  # a folder's option: not the .npz source's business
    assert data.kind == "npz" and len(data.test) == 10
    with pytest.raises(TypeError, match="unknown dataset option"):
        datasets.open_dataset(path, shuffle=True)
    with pytest.raises(DataError, match="no such file"):
        datasets.open_dataset(tmp_path / "missing")


def test_a_new_source_is_one_module(tmp_path):
    """A source added as one module (in a copy of the package) is opened by --dataset, and its own option reaches
    the source through every command that takes --dataset (train, export, parity, bench, run), with no other
    edit: each command below gives the option another value, and the source records the value it was opened
    with (parity and bench inside `run` reopen the data as the manifest records it: run's value again)."""
    import shutil
    import subprocess
    import sys

    pkg = tmp_path / "toolkit"
    shutil.copytree(PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "datasets" / "noise.py").write_text('''
"""A toy source: seeded noise images, two classes."""
import numpy as np
from toolkit.datasets import Source, SourceOption, register_source
from toolkit.datasets.base import Dataset, Split, array_reader

OPENED = []  # the noise_seed of every opening, in order


def _open(spec, data_dir=None, noise_seed=None):
    OPENED.append(noise_seed)
    rng = np.random.default_rng(noise_seed or 0)
    split = lambda n, name: Split(name, np.arange(n) % 2, array_reader(rng.integers(0, 255, (n, 8, 8, 1), np.uint8)))
    return Dataset(kind="noise", source=spec, class_names=("a", "b"), image_shape=(8, 8, 1), train=split(40, "train"),
                   validation=split(10, "validation"), test=split(20, "test"),
                   fingerprint={"method": "the seed", "sha256": f"noise{noise_seed}"},
                   split_rule="seeded", options={"noise_seed": noise_seed})


register_source(Source("noise", lambda s: s == "noise", _open, "noise: seeded noise images", order=40,
                       options=(SourceOption("--noise-seed", "noise_seed", type=int, help="the noise's seed"),)))
''')
    code = """
from toolkit import datasets
from toolkit.cli import build_parser, main
from toolkit.cli.common import dataset_options
from toolkit.datasets import noise

a = build_parser().parse_args(["export", "--dataset", "noise", "--noise-seed", "3"])
d = datasets.open_dataset(a.dataset, **dict(dataset_options(a)))
print("@opened", d.kind, len(d.test), d.options)
data = ["--dataset", "noise", "--quiet"]
fast = ["--format", "tflite", "--quantize", "none"]
commands = {
    "train": ["train", *data, "--noise-seed", "11", "--arch", "softmax", "--epochs", "1", "--exports", "d"],
    "export": ["export", *data, "--noise-seed", "12", *fast, "--exports", "d", "--calibration-samples", "4"],
    "parity": ["parity", *data, "--noise-seed", "13", "--exports", "d"],
    "bench": ["bench", *data, "--noise-seed", "14", "--exports", "d", "--runtimes", "litert", "--batch-sizes", "1",
              "--threads", "1", "--min-runs", "3", "--min-seconds", "0", "--warmup-seconds", "0", "--no-plots"],
    "run": ["run", *data, "--noise-seed", "15", "--model", "d/model.keras", "--exports", "r", *fast, "--skip-bench"],
}
for name, argv in commands.items():
    noise.OPENED.clear()
    rc = main(argv)
    print("@" + name, rc, list(dict.fromkeys(noise.OPENED)))  # (the commands print their own lines too)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=300)
    assert out.returncode == 0, out.stderr
    seen = [line[1:] for line in out.stdout.splitlines() if line.startswith("@")]
    assert seen == ["opened noise 20 {'noise_seed': 3}", "train 0 [11]", "export 0 [12]", "parity 0 [13]",
                    "bench 0 [14]", "run 0 [15]"], (out.stdout, out.stderr[-3000:])
