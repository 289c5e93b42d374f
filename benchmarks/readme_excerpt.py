"""Rewrite the report excerpt at the top of README.md from the committed result files of one CPU
benchmark run of one model (`python benchmarks/cpu.py --name NAME`, on the export in exports/):

- results/NAME-parity.json: parity and sizes per variant (each on its reference runtime);
- results/NAME-run1.json: latency and throughput per variant on its reference runtime;
- results/NAME-run2.json: the second run, back to back: a fastest row is called the winner only when
  this run ranks it first too.

    python benchmarks/readme_excerpt.py [--name cpu-intel-amx]

The block between ``<!-- excerpt:begin -->`` and ``<!-- excerpt:end -->`` is replaced with
``excerpt(NAME, *read_results(NAME))``, made from those three files alone.
"""

from __future__ import annotations

from pathlib import Path

from _common import README, RESULTS, cpu_text, parser, replace_block

from toolkit import schema
from toolkit.report import recommendations

NAME = "cpu-intel-amx"  # the run README quotes


def read_results(name: str = NAME, results: Path = RESULTS) -> tuple[schema.Parity, schema.Bench, schema.Bench]:
    """results/NAME-parity.json, NAME-run1.json and NAME-run2.json, read and checked by toolkit.schema."""
    parity = schema.Parity.read_file(results / f"{name}-parity.json")
    bench, second = (schema.Bench.read_file(results / f"{name}-{run}.json") for run in ("run1", "run2"))
    return parity, bench, second


def excerpt(name: str, parity: schema.Parity, bench: schema.Bench, second: schema.Bench) -> str:
    """README's excerpt block from one CPU run's parity and its two bench runs."""
    if len({d["export_generation"] for d in (parity, bench, second)}) != 1:
        raise SystemExit("the parity and bench files are not of one export generation")
    big = 32
    # each variant on its reference runtime (the keys without '@'), as parity recorded it, and the Keras reference's
    variants = {key: v for key, v in parity.variants.items() if "@" not in key and ":" not in key}
    reference_runtime = {key: v["runtime"] for key, v in variants.items()} | {"keras": parity.reference["runtime"]}
    keep = lambda doc: [r for r in doc.results if reference_runtime.get(r["variant"]) == r["runtime"]  # noqa: E731
                        and r["batch_size"] in (1, big)]
    rows = keep(bench)
    threads = max(r["threads"] for r in rows)

    def row(variant, batch, t):
        return next((r for r in rows if r["variant"] == variant and r["batch_size"] == batch and r["threads"] == t), None)

    machine = bench["provenance"]["machine"]
    lines = [
        f"An excerpt of a real report: the seed CNN trained with the defaults, exported, checked and benchmarked "
        f"on a {machine['cpu_count']}-core machine ({cpu_text(machine)}), one export (generation "
        f"`{bench['export_generation']}`): `python benchmarks/cpu.py --name {name}` (parity: "
        f"results/{name}-parity.json; latency: results/{name}-run1.json, {threads} threads, each variant on "
        f"its reference runtime; a second run, results/{name}-run2.json, decides the winners; all runtimes: "
        "[benchmarks/RESULTS.md](benchmarks/RESULTS.md)); this block: `python benchmarks/readme_excerpt.py`.",
        "",
        f"| variant | size (bytes) | accuracy | diff (pts) | 95% CI (pts) | agreement | gates | runtime | p50 ms batch 1 | "
        f"p50 ms batch {big} | img/s batch {big} |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    k1, kb = row("keras", 1, threads), row("keras", big, threads)
    lines.append(f"| keras (reference) | - | {parity['reference']['accuracy']:.2%} | - | - | - | - | {reference_runtime['keras']} | "
                 f"{k1['p50_ms']:.3f} | {kb['p50_ms']:.3f} | {kb['throughput']:,.0f} |")
    for variant, v in variants.items():
        lo, hi = v["accuracy_diff_ci95_points"]
        t = threads if row(variant, 1, threads) else 1
        b1, bb = row(variant, 1, t), row(variant, big, t)
        sample = f" ({v['images']:,} images)" if v["images"] != parity["reference"]["images"] else ""
        verdict = v.get("verdict") or ("pass" if v["passed"] else "fail")
        lines.append(
            f"| {variant} | {schema.model_bytes(v):,} | {v['accuracy']:.2%}{sample} | "
            f"{v['accuracy_diff_points']:+.2f} | {lo:+.2f} to {hi:+.2f} | {v['agreement']:.2%} | "
            f"{verdict if verdict == 'pass' else verdict.upper()} | {reference_runtime[variant]} | "
            + (f"{b1['p50_ms']:.3f} | " if b1 else "- | ")
            + (f"{bb['p50_ms']:.3f} | {bb['throughput']:,.0f} |" if bb else "- | - |"))
    manifest = {"artifacts": [{"variant": k, "bytes": v["bytes"], **({"model_bytes": v["model_bytes"]}
                               if "model_bytes" in v else {})} for k, v in variants.items()]}
    lines += ["", *[f"- {r}" for r in recommendations(manifest, {"variants": variants}, {"results": rows},
                                                      second={"results": keep(second)})]]
    return "\n".join(lines)


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--name", default=NAME)
    args = p.parse_args()
    replace_block(README, "excerpt", excerpt(args.name, *read_results(args.name)))
    print(f"rewrote the excerpt in {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
