"""Every command block of README.md runs as written (slow: `python -m pytest -m slow tests/test_readme.py`).

Each block runs in a fresh directory holding the files the README names: `exports/model.keras` (the seed
CNN, briefly trained), `flowers.keras` and `flowers/` (a small RGB classifier and its class folders),
`any_size.keras` (the same classifier taking any height and width), `net.pt2` and `net.onnx` (a small PyTorch
CNN, tests/userdata.py), `model.keras` and `data/` (the CI
snippets' names for them) and `releases/v1` (an exported, checked baseline). Install lines are what
.ci/run does and are skipped here; a block marked `<!-- readme-test: needs a GPU -->` (or the network)
is only checked to be marked. The quick-start block has its own test (tests/test_quickstart.py).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
ALLOWED_MARKS = ("needs a GPU", "needs the network")
INSTALL = ("pip install", "python3 -m venv", "pip uninstall")


def readme_blocks() -> list[dict]:
    """Every fenced bash/yaml block: its section, its mark (if any) and its commands, one per line."""
    text = (REPO / "README.md").read_text()
    blocks, section = [], ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"```(bash|yaml)$", line)
        if fence:
            mark = re.match(r"<!-- readme-test: (.*?) -->", lines[i - 1]) if i else None
            body = []
            i += 1
            while lines[i] != "```":
                body.append(lines[i])
                i += 1
            blocks.append({"section": section, "kind": fence.group(1), "mark": mark.group(1) if mark else None,
                           "commands": _commands(body, fence.group(1))})
        i += 1
    return blocks


def _commands(body: list[str], kind: str) -> list[str]:
    out = []
    for line in body:
        if kind == "yaml":  # `- run: CMD` (GitHub Actions) and `- CMD` under `script:` (GitLab CI)
            m = re.match(r"\s*-\s+(?:run:\s+)?(toolkit .*|python -m pytest .*|pip .*)$", line)
            if not m:
                continue
            line = m.group(1)
        command = line.split("  #")[0].split(" # ")[0].strip()
        if command and not command.startswith("#"):
            out.append(command)
    return out


def test_every_block_is_run_or_marked():
    blocks = readme_blocks()
    assert len(blocks) >= 8
    for b in blocks:
        assert b["mark"] is None or b["mark"] in ALLOWED_MARKS, b
        assert b["commands"], f"a block in '{b['section']}' has no command"
        for command in b["commands"]:
            assert command.startswith(("toolkit ", "python -m pytest", *INSTALL)), command


# ----------------------------------------------------------------------------- the files README names
@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, mnist, data_dir) -> Path:
    import keras
    from PIL import Image

    root = tmp_path_factory.mktemp("readme")
    env = _env(data_dir)
    # the seed CNN, briefly trained, where the quick start leaves it
    _ok(["toolkit", "train", "--train-limit", "12000", "--epochs", "1", "--quiet"], root, env)
    # flowers/: three classes of 32x32 RGB images (MNIST digits 0-2, upsampled), train/ and test/
    rng = np.random.default_rng(0)
    for split, source, count in (("train", mnist.train, 60), ("test", mnist.test, 30)):
        for label in range(3):
            folder = root / "flowers" / split / f"class{label}"
            folder.mkdir(parents=True)
            picks = rng.choice(np.flatnonzero(source.labels == label), count, replace=False)
            for n, k in enumerate(picks):
                gray = Image.fromarray(np.round(source.images[k, ..., 0] * 255).astype(np.uint8))
                gray.resize((32, 32), Image.BILINEAR).convert("RGB").save(folder / f"{n}.png")
    keras.utils.set_random_seed(0)
    x = np.stack([np.asarray(Image.open(p), np.float32) / 255 for p in sorted((root / "flowers" / "train").rglob("*.png"))])
    y = np.array([int(p.parent.name[-1]) for p in sorted((root / "flowers" / "train").rglob("*.png"))])
    for name, shape in (("flowers.keras", (32, 32, 3)), ("any_size.keras", (None, None, 3))):
        model = keras.Sequential([keras.Input(shape), keras.layers.Conv2D(8, 3, activation="relu"),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=3, batch_size=32, verbose=0)
        model.save(root / name)
    from userdata import torch_mnist_net  # net.pt2 and net.onnx (Models from PyTorch and ONNX)

    torch_mnist_net(root, mnist.train.images, mnist.train.labels)
    shutil.copy(root / "flowers.keras", root / "model.keras")
    shutil.copytree(root / "flowers", root / "data")
    # releases/v1: the baseline the CI snippets compare against, exported and checked
    _ok(["toolkit", "export", "--model", "model.keras", "--dataset", "data/", "--exports", "releases/v1", "--quiet"],
        root, env)
    _ok(["toolkit", "parity", "--exports", "releases/v1", "--quiet"], root, env)
    return root


def _env(data_dir: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TOOLKIT_DATA_DIR": str(Path(data_dir).resolve()),
            "TOOLKIT_NO_PROGRESS": "1"}


def _ok(command: list[str], cwd: Path, env: dict) -> None:
    if command[0] == "toolkit":
        command = [sys.executable, "-m", "toolkit", *command[1:]]
    elif command[:3] == ["python", "-m", "pytest"]:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *command[3:]]
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{shlex.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}" \
                                 f"\n{proc.stdout[-2000:]}"


# the state a block starts from, beyond the sandbox: the CI commands gate an export already made
EXTRA = {"The parity suite in CI": lambda root: shutil.copytree(root / "releases" / "v1", root / "build" / "export",
                                                                symlinks=True)}


def _runnable() -> list:
    return [pytest.param(n, b, id=f"{n}-{b['section']}") for n, b in enumerate(readme_blocks())
            if b["mark"] is None and b["section"] != "Two commands"]


@pytest.mark.slow
@pytest.mark.parametrize("n, block", _runnable())
def test_readme_block_runs_as_written(n, block, sandbox, tmp_path, data_dir):
    here = tmp_path / "here"
    shutil.copytree(sandbox, here, symlinks=True)
    if block["kind"] == "bash" and block["section"] in EXTRA:
        EXTRA[block["section"]](here)
    env = _env(data_dir)
    for command in block["commands"]:
        if command.startswith(INSTALL):
            continue  # the install: what .ci/run does
        _ok(shlex.split(command), here, env)
