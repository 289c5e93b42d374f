"""TRAINING.md: how the seed CNN's default training recipe was chosen, on the validation split only.

    python benchmarks/training_md.py

Reads the training records in results/training-search/ (each written by the `toolkit train`
command in its own provenance) and results/pipeline.json (the chosen recipe over three seeds,
`python benchmarks/pipeline.py`). The choice: among the candidates whose fit fits the 150 s budget
(issue #16), the highest mean validation accuracy over the last three epochs (the last epoch alone
ties). Test accuracy is not used for the choice and not shown for the candidates.

``markdown(read_results())`` is the page: the files are read once, the text is made from them alone.
"""

from __future__ import annotations

from pathlib import Path

from _common import BENCHMARKS, RESULTS

from toolkit.artifacts import atomic_write_text, read_json

BUDGET_S = 150.0
WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


SEARCH = "training-search"


def read_results(results: Path = RESULTS) -> dict[str, dict]:
    """The committed files TRAINING.md is made from, by path under results/: every training record of the
    search (training-search/NAME.json) and pipeline.json where it exists."""
    paths = [*sorted((results / SEARCH).glob("*.json")), results / "pipeline.json"]
    return {p.relative_to(results).as_posix(): read_json(p) for p in paths if p.is_file()}


def _one(values, what: str):
    """The value every record holds for ``what``: the page states it once, so the records must agree."""
    values = set(values)
    if len(values) != 1:
        raise SystemExit(f"the training records differ in {what}: {sorted(values, key=str)}")
    return values.pop()


def recipe(h: dict) -> str:
    return (f"Adam lr {h['learning_rate']:g} {h.get('lr_schedule', 'constant')}, batch {h['batch_size']}, "
            f"{h['epochs']} epochs" + (", XLA" if h.get("jit_compile") else "")
            + (", bf16 compute" if h.get("precision") == "bf16" else ""))


def markdown(docs: dict[str, dict]) -> str:
    """TRAINING.md from the files ``read_results`` reads, by path under results/."""
    runs = {Path(k).stem: d for k, d in docs.items() if k.startswith(f"{SEARCH}/")}
    pipeline = docs.get("pipeline.json")
    seed = _one((r["hyperparameters"]["seed"] for r in runs.values()), "seed")
    train_images = _one((r["data"]["train_images"] for r in runs.values()), "training images")
    validation_images = _one((r["data"]["validation_images"] for r in runs.values()), "validation images")
    cores = _one((r["provenance"]["machine"]["cpu_count"] for r in runs.values()), "machine's core count")
    score = {k: sum(e["val_accuracy"] for e in r["epochs"][-3:]) / 3 for k, r in runs.items()}
    within = [k for k, r in runs.items() if r["train_seconds"] <= BUDGET_S]
    best = max(within or score, key=score.get)
    lines = ["# Training recipe for the seed CNN", "",
             f"Candidates trained once each with seed {seed} on the {train_images:,} training images; **chosen on the "
             f"{validation_images:,} validation images only** (among the candidates that trained within the "
             f"{BUDGET_S:g} s budget, the highest mean validation accuracy over the last three epochs). Each row's "
             "record is in `results/training-search/NAME.json` with the exact `toolkit train` command in its "
             f"provenance. Fit seconds are wall time on this shared {cores}-core machine: other work on it moves "
             "them from run to run, so close figures are not a ranking.", "",
             "| candidate | recipe | validation accuracy per epoch | mean of last 3 | fit s |",
             "|---|---|---|---:|---:|"]
    for k, r in sorted(runs.items(), key=lambda kv: -score[kv[0]]):
        curve = ", ".join(f"{e['val_accuracy']:.2%}" for e in r["epochs"])
        mark = " **(chosen)**" if k == best else ""
        lines.append(f"| {k}{mark} | {recipe(r['hyperparameters'])} | {curve} | {score[k]:.3%} | "
                     f"{r['train_seconds']:.0f} |")
    if pipeline is not None:
        p = pipeline
        seeds = p.get("seeds", [])
        if seeds:
            mean = sum(s["test_accuracy"] for s in seeds) / len(seeds)
            count = WORDS.get(len(seeds), str(len(seeds)))
            lines += ["", f"## The chosen recipe over {count} seeds", "",
                      f"`python benchmarks/pipeline.py` (commit `{p['provenance']['git_commit']}`): the defaults "
                      f"({recipe(seeds[0]['hyperparameters'])}), each seed trained in its own process.", "",
                      "| seed | validation accuracy per epoch | test accuracy | fit s | evaluation s | fit + evaluation s |",
                      "|---:|---|---:|---:|---:|---:|"]
            for s in seeds:
                curve = ", ".join(f"{e['val_accuracy']:.2%}" for e in s["per_epoch"])
                lines.append(f"| {s['seed']} | {curve} | {s['test_accuracy']:.2%} | {s['train_seconds']:.1f} | "
                             f"{s['evaluate_seconds']:.1f} | {s['train_seconds'] + s['evaluate_seconds']:.1f} |")
            lines += ["", f"Mean test accuracy over the {count} seeds: **{mean:.2%}**."]
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    atomic_write_text(BENCHMARKS / "TRAINING.md", markdown(read_results()))
    print(f"wrote {BENCHMARKS / 'TRAINING.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
