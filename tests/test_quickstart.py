"""The quick start works on any machine: with TOOLKIT_DATA_DIR unset, MNIST comes from the Keras cache
($KERAS_HOME/datasets/mnist.npz), read directly when it is there. MNIST is placed there the way Keras'
download leaves it (an .npz of the four arrays), built here from the IDX files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def keras_home(tmp_path_factory, mnist) -> Path:
    home = tmp_path_factory.mktemp("keras-home")
    (home / "datasets").mkdir()
    x = np.concatenate([mnist.validation.images, mnist.train.images])  # the 60,000 in file order
    y = np.concatenate([mnist.validation.labels, mnist.train.labels])
    np.savez(home / "datasets" / "mnist.npz", x_train=np.round(x[..., 0] * 255).astype(np.uint8),
             y_train=y.astype(np.uint8), x_test=np.round(mnist.test.images[..., 0] * 255).astype(np.uint8),
             y_test=mnist.test.labels.astype(np.uint8))
    return home


def _env(keras_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TOOLKIT_DATA_DIR"}
    return {**env, "KERAS_HOME": str(keras_home), "PYTHONPATH": str(REPO)}


def test_without_toolkit_data_dir_mnist_comes_from_the_keras_cache(keras_home, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "toolkit", "train", "--arch", "mlp", "--epochs", "1",
                           "--train-limit", "5000", "--quiet", "--exports", str(tmp_path)], env=_env(keras_home),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import json

    record = json.loads((tmp_path / "train.json").read_text())
    assert record["data"]["source"] == f"keras cache {keras_home / 'datasets' / 'mnist.npz'}"
    assert record["test_accuracy"] > 0.85  # the real images and labels, in order


def test_a_broken_keras_cache_is_one_line(tmp_path):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "mnist.npz").write_bytes(b"not an npz")
    proc = subprocess.run([sys.executable, "-m", "toolkit", "train", "--exports", str(tmp_path / "e")],
                          env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 3 and "is not a readable MNIST .npz" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_the_readme_quick_start_as_written(keras_home, tmp_path):
    """README's two commands block, run line by line in a fresh clone's place (the install line is the one CI
    runs; here the package is already installed), with TOOLKIT_DATA_DIR unset."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Two commands\n\n```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands[0].startswith("python3 -m venv")  # the install: what .ci/run does
    run = [c for c in commands if c.startswith("toolkit ")]
    assert run == ["toolkit run --quick"]
    proc = subprocess.run([sys.executable, "-m", "toolkit", *run[0].split()[1:]], cwd=tmp_path,
                          env=_env(keras_home), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "exports" / "report.md").is_file()
