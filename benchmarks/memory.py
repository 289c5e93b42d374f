"""Peak resident memory of `toolkit parity` on an image folder of 10,000 and of 100,000 test
images: memory must be bounded by the batch, not by the dataset.

    python benchmarks/memory.py [--work DIR] [--out benchmarks/results] [--sizes 10000,100000]

Generates (never commits) image folders of 28x28 grayscale PNGs in ten classes (class k: a
bright 3x3 blob in grid cell k on a noisy background), all with the same 2,000 training images
and 10,000 or 100,000 test images; trains `--arch mlp` on the first for two epochs and exports
every variant from it; then runs `toolkit parity --dataset FOLDER` on each folder in a fresh
process, alternating, and reads that process's peak RSS (ru_maxrss of the child, measured by a
wrapper process per run so that runs do not see each other's peaks). Writes
benchmarks/results/memory.json and benchmarks/MEMORY.md (every number from the JSON).
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, parser, run_toolkit, toolkit_command

from toolkit import schema
from toolkit.artifacts import atomic_write_json, atomic_write_text, read_json
from toolkit.config import ParityConfig
from toolkit.provenance import provenance

CLASSES, SIZE, TRAIN_PER_CLASS = 10, 28, 200
LIMIT_MB = 100.0  # the growth from 10k to 100k images must stay under this

# Runs the command given as arguments and prints the child's peak RSS in KiB (Linux ru_maxrss).
WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def write_images(root: Path, count: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    grid = math.ceil(math.sqrt(CLASSES))
    cell = SIZE // grid
    for k in range(CLASSES):
        (root / f"class-{k}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        k = i % CLASSES
        img = rng.integers(0, 50, size=(SIZE, SIZE), dtype=np.uint8)
        r, c = divmod(k, grid)
        y, x = r * cell + int(rng.integers(0, cell - 2)), c * cell + int(rng.integers(0, cell - 2))
        img[y : y + 3, x : x + 3] = int(rng.integers(170, 256))
        Image.fromarray(img, "L").save(root / f"class-{k}" / f"{i:06d}.png")


def make_folder(work: Path, test_images: int) -> Path:
    root = work / f"folder-{test_images}"
    if not (root / "test").is_dir():
        write_images(root / "train", TRAIN_PER_CLASS * CLASSES, seed=0)
        write_images(root / "test", test_images, seed=1)
    return root


def toolkit(*argv) -> None:
    run_toolkit(*argv, check=True)


def peak_rss(argv: list[str]) -> tuple[int, float, float]:
    """(exit code, peak RSS in MiB, wall seconds) of one toolkit command in a fresh process."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *toolkit_command(*argv)],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[-2]), int(out[-1]) / 1024, time.perf_counter() - start


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--work", type=Path, default=None, help="where the generated folders go (default: a temp dir)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--rounds", type=int, default=2, help="parity runs per size, alternating (default: 2)")
    p.add_argument("--markdown-only", action="store_true")
    args = p.parse_args()
    if args.markdown_only:
        render(read_json(args.out / "memory.json"), args.out)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        folders = {}
        for n in sizes:
            start = time.perf_counter()
            folders[n] = make_folder(work, n)
            print(f"folder with {n:,} test images: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        exports = work / "exports"
        toolkit("train", "--arch", "mlp", "--epochs", "2", "--dataset", str(folders[sizes[0]]), "--exports", str(exports))
        toolkit("export", "--exports", str(exports), "--force")
        runs = []
        for r in range(args.rounds):
            for n in sizes:
                rc, mb, wall = peak_rss(["parity", "--exports", str(exports), "--dataset", str(folders[n]),
                                         "--json", str(work / f"parity-{n}.json")])
                parity = schema.Parity.read_file(work / f"parity-{n}.json")
                runs.append({"round": r + 1, "test_images": n, "exit_code": rc, "peak_rss_mb": round(mb, 1),
                             "wall_seconds": round(wall, 1), "reference_images": parity["reference"]["images"],
                             "variants": len(parity["variants"])})
                print(f"round {r + 1}: {n:,} images: peak RSS {mb:.1f} MiB, {wall:.0f} s, exit {rc}", file=sys.stderr)
        manifest = schema.Manifest.read(exports)
    peak = {n: max(x["peak_rss_mb"] for x in runs if x["test_images"] == n) for n in sizes}
    low = {n: min(x["peak_rss_mb"] for x in runs if x["test_images"] == n) for n in sizes}
    growth = peak[sizes[-1]] - low[sizes[0]]  # the largest growth the runs allow
    doc = {
        "what": "peak RSS of `toolkit parity --dataset FOLDER` (every exported variant and the Keras reference)",
        "model": {"arch": "mlp", "variants": [a.variant for a in manifest.artifacts]},
        "images": f"{SIZE}x{SIZE} grayscale PNG, {CLASSES} classes, generated",
        "batch_size": ParityConfig().batch_size,  # parity's default: the runs above do not set it
        "runs": runs,
        "peak_rss_mb": {str(n): peak[n] for n in sizes},
        "growth_mb": round(growth, 1),
        "growth_rule": f"max peak at {sizes[-1]:,} images minus min peak at {sizes[0]:,}",
        "limit_mb": LIMIT_MB,
        "passed": growth < LIMIT_MB and all(x["exit_code"] == 0 for x in runs),
        "command": "python benchmarks/memory.py",
        "provenance": provenance(),
    }
    atomic_write_json(args.out / "memory.json", doc)
    render(doc, args.out)
    return 0 if doc["passed"] else 1


def render(doc: dict, out: Path) -> None:
    """Write MEMORY.md beside ``out`` (results/) or into it."""
    atomic_write_text(out.parent / "MEMORY.md" if out.name == "results" else out / "MEMORY.md", markdown(doc))


def markdown(doc: dict) -> str:
    """MEMORY.md from results/memory.json alone."""
    m = doc["provenance"]["machine"]
    lines = [
        "# Parity's memory on large image folders",
        "",
        f"`{doc['command']}` on {m['cpu']} ({m['cpu_count']} cores), commit `{doc['provenance']['git_commit']}`, "
        f"{doc['provenance']['created']}. Results: [results/memory.json](results/memory.json).",
        "",
        f"What: {doc['what']}, model `{doc['model']['arch']}` with {len(doc['model']['variants'])} variants "
        f"({', '.join(doc['model']['variants'])}); {doc['images']}; batches of {doc['batch_size']}. Each run is a "
        "fresh process; its peak resident set size is the kernel's ru_maxrss.",
        "",
        "| round | test images | peak RSS (MiB) | wall (s) | exit |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {r['round']} | {r['test_images']:,} | {r['peak_rss_mb']:.1f} | {r['wall_seconds']:.0f} | "
          f"{r['exit_code']} |" for r in doc["runs"]],
        "",
        f"Growth ({doc['growth_rule']}): **{doc['growth_mb']:.1f} MiB** (limit {doc['limit_mb']:.0f} MiB): "
        f"{'within the limit' if doc['passed'] else 'OVER THE LIMIT'}. Pixels are decoded one batch at a time; what "
        "grows with the image count is per-image bookkeeping (the folder's file list, the labels, each variant's "
        "predictions), not the images.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
