"""Time the default pipeline on this machine: `toolkit train`, `toolkit export`, `toolkit parity`.

    python benchmarks/pipeline.py [--exports exports] [--out benchmarks/results]

Runs each command as a user would (a subprocess: wall time includes Python and TensorFlow
start-up), then reads what the commands themselves recorded (train.json, manifest.json,
parity.json) and writes benchmarks/results/pipeline.json and PIPELINE.md. Every number in
the Markdown comes from those files.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _common import RESULTS, parser, run_toolkit

from toolkit import schema
from toolkit.artifacts import atomic_write_json, atomic_write_text, read_json
from toolkit.provenance import provenance


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    run_toolkit(*argv, check=True)
    return time.perf_counter() - start


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--exports", type=Path, default=Path("exports"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--seeds", default="0,1,2",
                   help="train the defaults with each seed (default: %(default)s); the first is exported and checked")
    p.add_argument("--markdown-only", action="store_true",
                   help="only re-render PIPELINE.md from an existing results/pipeline.json")
    args = p.parse_args()
    if args.markdown_only:
        render(read_json(args.out / "pipeline.json"), args.out)
        return 0
    ex = str(args.exports)
    seeds = [int(v) for v in args.seeds.split(",")]
    records = []
    for seed in seeds[1:]:  # the other seeds first, each in its own process, into exports/seed-N
        out = args.exports / f"seed-{seed}"
        timed(["train", "--exports", str(out), "--seed", str(seed)])
        records.append(read_json(out / schema.TRAIN))
    walls = {
        "train": timed(["train", "--exports", ex, "--seed", str(seeds[0])]),
        "export": timed(["export", "--exports", ex, "--force"]),
        "parity": timed(["parity", "--exports", ex]),
        "footprint": timed(["footprint", "--exports", ex]),
    }
    train = read_json(args.exports / schema.TRAIN)
    records.insert(0, train)
    manifest = schema.Manifest.read(args.exports)
    parity = schema.Parity.read(args.exports)
    footprint = schema.Footprint.read(args.exports)
    doc = {
        "wall_seconds": walls,
        "seeds": [{"seed": r["hyperparameters"]["seed"], "hyperparameters": r["hyperparameters"],
                   "test_accuracy": r["test_accuracy"], "validation_accuracy": r["validation_accuracy"],
                   "train_seconds": r["train_seconds"], "evaluate_seconds": r.get("evaluate_seconds"),
                   "weights_sha256": r["model"]["weights_sha256"], "per_epoch": r["epochs"]} for r in records],
        "train": {
            "epochs": train["hyperparameters"]["epochs"],
            "train_seconds": train["train_seconds"],
            "evaluate_seconds": train.get("evaluate_seconds"),
            "test_accuracy": train["test_accuracy"],
            "weights_sha256": train["model"]["weights_sha256"],
            "per_epoch": train["epochs"],
        },
        "export": {e["variant"]: {"bytes": e["bytes"], "conversion_seconds": e["conversion_seconds"],
                                  **({"model_bytes": e["model_bytes"]} if "model_bytes" in e else {})}
                   for e in manifest["artifacts"]},
        "parity": {
            "reference_accuracy": parity["reference"]["accuracy"],
            "passed": parity["passed"],
            "variants": {k: {m: v[m] for m in ("accuracy", "accuracy_diff_points", "accuracy_diff_ci95_points",
                                               "agreement", "disagreements", "mcnemar_p", "max_abs_logit_diff",
                                               "passed", "seconds", "images")}
                         for k, v in parity["variants"].items()},
        },
        "footprint": footprint["variants"],
        "provenance": provenance(),
    }
    atomic_write_json(args.out / "pipeline.json", doc)
    render(doc, args.out)
    return 0


def render(doc: dict, out: Path) -> None:
    """Write PIPELINE.md beside ``out`` (results/)."""
    atomic_write_text(out.parent / "PIPELINE.md", markdown(doc))
    print(f"wrote {out.parent / 'PIPELINE.md'} from {out / 'pipeline.json'}")


def _images(doc: dict) -> str:
    """How many test images parity used: every variant's count, TFLM's sample apart."""
    counts = {name: p["images"] for name, p in doc["parity"]["variants"].items()}
    full = ", ".join(f"{n:,}" for n in sorted({n for name, n in counts.items() if name != "tflite-micro"}))
    micro = f"; TFLM a {counts['tflite-micro']:,}-image sample" if "tflite-micro" in counts else ""
    return f"{full} images{micro}"


def markdown(doc: dict) -> str:
    """PIPELINE.md from results/pipeline.json alone."""
    walls = doc["wall_seconds"]
    m = doc["provenance"]["machine"]
    lines = [
        "# Default pipeline on this machine",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores; {m['platform']}. "
        f"Commit {doc['provenance']['git_commit']}, {doc['provenance']['created']}. "
        "Produced by `python benchmarks/pipeline.py`; numbers from `results/pipeline.json`.",
        "",
        "| step | wall time (s, incl. start-up) | detail |",
        "|---|---:|---|",
        f"| `toolkit train` | {walls['train']:.1f} | {doc['train']['epochs']} epochs, "
        f"{doc['train']['train_seconds']:.1f} s in `fit` + {doc['train'].get('evaluate_seconds') or 0:.1f} s "
        f"evaluation, test accuracy {doc['train']['test_accuracy']:.2%} |",
        f"| `toolkit export` (every variant) | {walls['export']:.1f} | conversion "
        f"{sum(v['conversion_seconds'] for v in doc['export'].values()):.1f} s in all |",
        f"| `toolkit parity` (every variant, {_images(doc)}) | {walls['parity']:.1f} | "
        f"all gates {'passed' if doc['parity']['passed'] else 'NOT passed'} |",
        f"| `toolkit footprint` | {walls['footprint']:.1f} | TFLM arena measured per int8 TFLite variant |",
        "",
        "| epoch | loss | train accuracy | validation accuracy |",
        "|---:|---:|---:|---:|",
        *[f"| {e['epoch']} | {e['loss']:.4f} | {e['accuracy']:.2%} | {e['val_accuracy']:.2%} |"
          for e in doc["train"]["per_epoch"]],
        "",
    ]
    if doc.get("seeds"):
        seeds = doc["seeds"]
        mean = sum(s["test_accuracy"] for s in seeds) / len(seeds)
        lines += ["Every seed of the defaults (each trained in its own process; the first is the one exported):", "",
                  "| seed | test accuracy | fit s | evaluation s | fit + evaluation s |", "|---:|---:|---:|---:|---:|",
                  *[f"| {s['seed']} | {s['test_accuracy']:.2%} | {s['train_seconds']:.1f} | "
                    f"{s['evaluate_seconds']:.1f} | {s['train_seconds'] + s['evaluate_seconds']:.1f} |" for s in seeds],
                  "", f"Mean test accuracy: **{mean:.2%}**; per-epoch validation curves in [TRAINING.md](TRAINING.md).",
                  ""]
    lines += [
        "| variant | bytes | conversion (s) | images | accuracy | diff (pts) | 95% CI (pts) | agreement | McNemar p | gates |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for name, e in doc["export"].items():
        p = doc["parity"]["variants"][name]
        lo, hi = p["accuracy_diff_ci95_points"]
        lines.append(f"| {name} | {e['bytes']:,} | {e['conversion_seconds']:.1f} | {p['images']:,} | {p['accuracy']:.2%} | "
                     f"{p['accuracy_diff_points']:+.2f} | {lo:+.2f} to {hi:+.2f} | {p['agreement']:.2%} | "
                     f"{p['mcnemar_p']:.3g} | {'pass' if p['passed'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
