"""What the benchmark scripts share: where results go, how the toolkit is run, how its files and the
scripts' own result files are read and written, and the few readings of them more than one script makes.

A script run as ``python benchmarks/NAME.py`` has benchmarks/ on ``sys.path`` (``import _common``); the
toolkit itself is the installed package (``pip install -e .``), never a path put in front of it.
The names of the files the toolkit writes come from ``toolkit.schema``; a script's own result files
(``ptq.json``, ``gate.json`` in results/, ...) are named where they are made.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from toolkit.artifacts import atomic_write_text

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results"
README = REPO / "README.md"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's argument parser, its module docstring as the help text (kept as written)."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


# --- running the toolkit: as a user does, `toolkit ...` in a fresh process ---------------------------------


def toolkit_command(*args) -> list[str]:
    """The command line of `toolkit ARGS` (this Python, ``-m toolkit``: the toolkit of this environment)."""
    return [sys.executable, "-m", "toolkit", *map(str, args)]


def run_toolkit(*args, env: Mapping | None = None, check: bool = False,
                capture: bool = False) -> subprocess.CompletedProcess:
    """Run `toolkit ARGS` in a fresh process; ``capture`` keeps its output (text) instead of showing it."""
    return subprocess.run(toolkit_command(*args), env=None if env is None else dict(env), check=check,
                          capture_output=capture, text=True)


# --- result files -------------------------------------------------------------------------------------------


def _block_span(text: str, name: str) -> tuple[int, int] | None:
    """Where the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` starts and stops."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    start = text.find(begin)
    stop = text.find(end, start + len(begin)) if start >= 0 else -1
    return (start + len(begin), stop) if stop >= 0 else None


def replace_block(path: Path, name: str, body: str, required: bool = True) -> bool:
    """Replace what lies between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``path`` with
    ``body`` (on lines of its own). False, or an error when ``required``, where the markers are missing."""
    text = Path(path).read_text()
    span = _block_span(text, name)
    if span is None:
        if required:
            raise SystemExit(f"{path} has no <!-- {name}:begin --> ... <!-- {name}:end --> block")
        return False
    atomic_write_text(path, text[: span[0]] + "\n" + body + "\n" + text[span[1]:])
    return True


def read_block(path: Path, name: str) -> str | None:
    """The body ``replace_block(path, name, body)`` wrote (None where the markers are missing): what a
    script's block function must render for the committed text to be current."""
    text = Path(path).read_text()
    span = _block_span(text, name)
    if span is None:
        return None
    inner = text[span[0]: span[1]]
    return inner[1:-1] if inner.startswith("\n") and inner.endswith("\n") and len(inner) > 1 else inner


# --- readings of the toolkit's records ----------------------------------------------------------------------


def row_key(row: Mapping) -> tuple:
    """A bench row's identity: the same measurement in another run of `toolkit bench` has the same key."""
    return (row["variant"], row["runtime"], row["batch_size"], row["threads"])


def artifact_files(exports: Path, manifest: Mapping) -> dict[str, Path]:
    """Every artifact of an export, checked against its manifest entry (inside the export, size, sha256)."""
    from toolkit.artifacts import verify_entry

    return {e["variant"]: verify_entry(exports, e) for e in manifest["artifacts"]}


def provenance_line(prov: Mapping) -> str:
    """A page's last line: the machine's CPU and the commit that measured it, from a provenance record."""
    return f"Machine: {prov['machine'].get('cpu')}; git {prov.get('git_commit', '')[:7]}."


def cpu_text(machine: Mapping) -> str:
    """The CPU and the features behind runtime choices, from a provenance machine record (records written
    before features were summarised carry only the raw flags: the same summary is made from them)."""
    from toolkit.provenance import cpu_description, cpu_features

    if not machine.get("cpu_features") and machine.get("cpu_flags"):
        machine = {**machine, "cpu_features": cpu_features(machine["cpu_flags"])}
    return cpu_description(machine)


def mnist_array(data_dir: Path, part: str):
    """One of MNIST's four IDX arrays (``train_images``, ``train_labels``, ``test_images``,
    ``test_labels``) as uint8, read and checked by the toolkit's own reader."""
    from toolkit.datasets import mnist

    name, magic, count = mnist.FILES[part]
    return mnist.read_idx(Path(data_dir) / name, magic, count)


# --- scripts that measure some models per run and keep the others' results ---------------------------------


def per_model_main(p: argparse.ArgumentParser, script: str, result: str, page: str, markdown, measure) -> None:
    """The main() of a script whose JSON holds one result per model: ``--from-json`` only renders ``page``;
    otherwise each of ``--models`` is measured (``measure(name, args, data_dir)``) and stored with the command and
    provenance that measured it (a run of some models keeps the others as they were measured), the JSON written
    after each model, then the page."""
    import os

    from toolkit.artifacts import atomic_write_json, read_json
    from toolkit.provenance import provenance

    p.add_argument("--data-dir", type=Path, default=None, help="MNIST's folder (default: $TOOLKIT_DATA_DIR)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--from-json", action="store_true", help=f"only rewrite {page} from the JSON")
    args = p.parse_args()
    out = args.out / result
    if args.from_json:
        atomic_write_text(BENCHMARKS / page, markdown(read_json(out)))
        return
    data_dir = args.data_dir or Path(os.environ["TOOLKIT_DATA_DIR"])
    command = (f"python benchmarks/{script} " + " ".join(sys.argv[1:])).rstrip()
    doc = read_json(out) if out.is_file() else {"models": {}}
    doc["command"] = command
    for name in args.models:
        print(f"{name}: measuring", file=sys.stderr, flush=True)
        doc["models"][name] = {**measure(name, args, data_dir), "command": command, "provenance": provenance()}
        doc["provenance"] = provenance()
        atomic_write_json(out, doc)
    atomic_write_text(BENCHMARKS / page, markdown(doc))
    print(f"wrote {out} and {BENCHMARKS / page}", file=sys.stderr)
