"""Every tutorial architecture through `toolkit run`, compared in one table.

    python benchmarks/architectures.py [--root exports/arch] [--out benchmarks/results]

Runs `toolkit run --arch ARCH --exports ROOT/ARCH` with defaults for cnn, mlp, mlp-deep and
softmax, then reads each run's train.json, manifest.json, parity.json, bench.json and
footprint.json into results/architectures.json and ARCHITECTURES.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import RESULTS, parser, run_toolkit

from toolkit import schema
from toolkit.artifacts import atomic_write_json, atomic_write_text, read_json
from toolkit.model import ARCHITECTURES
from toolkit.provenance import provenance


def summarize(arch: str, exit_code: int, d: Path) -> dict:
    """One architecture's row, read from the files `toolkit run` wrote into ``d``."""
    train = read_json(d / schema.TRAIN)
    parity, manifest = schema.Parity.read(d), schema.Manifest.read(d)
    bench, fp = schema.Bench.read(d), schema.Footprint.read(d, required=False)
    threads = max(r["threads"] for r in bench.results)
    latency = {}
    for r in bench.results:
        if r["batch_size"] == 1 and (r["threads"] == threads or r["runtime"] == "tflm"):
            latency[r["variant"]] = {"runtime": r["runtime"], "p50_ms": r["p50_ms"], "threads": r["threads"]}
    return {
        "exit_code": exit_code,
        "parameters": train["model"]["parameters"],
        "epochs": train["hyperparameters"]["epochs"],
        "train_seconds": train["train_seconds"],
        "test_accuracy": train["test_accuracy"],
        "tutorial_accuracy": ARCHITECTURES[arch].tutorial_accuracy,
        "all_gates_passed": parity["passed"],
        "variants": {
            a.variant: {
                "bytes": a.size,
                "accuracy": parity.variants[a.variant]["accuracy"],
                "images": parity.variants[a.variant]["images"],
                "passed": parity.variants[a.variant]["passed"],
                "batch1": latency.get(a.variant),
            }
            for a in manifest.artifacts
        },
        "keras_batch1": latency.get("keras"),
        "footprint": {r["variant"]: {"arena_bytes": r["arena_bytes"],
                                     "fits": [f["device"] for f in r.get("devices", []) if f["fits"]]}
                      for r in (fp or {}).get("variants", []) if r["variant"] == "tflite-int8"},
    }


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--root", type=Path, default=Path("exports/arch"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--archs", nargs="+", default=list(ARCHITECTURES))
    args = p.parse_args()
    summary = {}
    for arch in args.archs:
        d = args.root / arch
        rc = run_toolkit("run", "--arch", arch, "--exports", d).returncode
        summary[arch] = summarize(arch, rc, d)
    doc = {"architectures": summary, "provenance": provenance()}
    atomic_write_json(args.out / "architectures.json", doc)
    atomic_write_text(args.out.parent / "ARCHITECTURES.md", markdown(doc))
    print(f"wrote {args.out / 'architectures.json'} and {args.out.parent / 'ARCHITECTURES.md'}")
    return 0 if all(s["exit_code"] == 0 for s in summary.values()) else 1


def markdown(doc: dict) -> str:
    summary, prov = doc["architectures"], doc["provenance"]
    lines = [
        "# The tutorial architectures compared",
        "",
        f"`python benchmarks/architectures.py` ran `toolkit run --arch ARCH` with defaults for each; every "
        f"number is read from `results/architectures.json`. Machine: {prov['machine']['cpu']}, "
        f"{prov['machine']['cpu_count']} cores; commit `{prov['git_commit']}`, {prov['created']}.",
        "",
        "| architecture | parameters | epochs | train s | test accuracy | tutorial | all gates | "
        "int8 size (bytes) | TFLM arena (bytes) | fits |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for arch, s in summary.items():
        fp = s["footprint"].get("tflite-int8", {})
        lines.append(
            f"| {arch} | {s['parameters']:,} | {s['epochs']} | {s['train_seconds']:.1f} | {s['test_accuracy']:.2%} | "
            f"{s['tutorial_accuracy']:.1%} | {'pass' if s['all_gates_passed'] else 'FAIL'} | "
            f"{s['variants']['tflite-int8']['bytes']:,} | "
            f"{fp.get('arena_bytes') or '-'} | {', '.join(fp.get('fits', [])) or 'none'} |")
    variants = list(next(iter(summary.values()))["variants"])
    micro = sorted({s["variants"]["tflite-micro"]["images"] for s in summary.values() if "tflite-micro" in s["variants"]})
    lines += ["", "Accuracy per variant" + (f" (TFLM on its {' or '.join(f'{n:,}' for n in micro)}-image sample)"
                                            if micro else "") + ":", "",
              "| architecture | " + " | ".join(variants) + " |", "|---|" + "---:|" * len(variants)]
    for arch, s in summary.items():
        lines.append(f"| {arch} | " + " | ".join(f"{s['variants'][v]['accuracy']:.2%}" for v in variants) + " |")
    lines += ["", "p50 latency at batch 1 in ms (runtime; threads as in the run, TFLM one thread, host "
              "reference kernels):", "", "| architecture | keras | " + " | ".join(variants) + " |",
              "|---|---:|" + "---:|" * len(variants)]
    for arch, s in summary.items():
        cells = [f"{s['keras_batch1']['p50_ms']:.3f}" if s["keras_batch1"] else "-"]
        cells += [f"{s['variants'][v]['batch1']['p50_ms']:.3f}" if s["variants"][v]["batch1"] else "-" for v in variants]
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
