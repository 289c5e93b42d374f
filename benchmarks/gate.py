"""`toolkit gate` measured: does it pass unchanged artifacts (A/A) and catch real regressions (A/B),
with its defaults, on this shared 2-core machine while other work runs on it?

    python benchmarks/gate.py [--exports exports] [--work DIR] [--rounds 20] [--out benchmarks/results]

- **A/A (latency and accuracy)**: a byte-for-byte copy of the export in ``--exports`` (with its parity
  results), gated against the original ``--rounds`` times with the defaults (every run re-measures the
  shipped variants, baseline and new file in turns in fresh processes) while a background process
  loads one core in bursts (a single-threaded matrix product, on for 0.5-2 s, off for 0-1 s, seeded).
  Each run is independent. Expected: at least 19 of 20 pass.
- **A/A (accuracy path)**: an equivalent model exported to other bytes: the same CNN with conv1's filters
  in another (seeded) order and conv2's input channels permuted to match: the same function (up to float
  summation order), every file a different sha256, so the gate compares predictions image by image
  instead of passing on equal hashes. Expected: at least 19 of 20 pass.
- **A/B latency**: a new release of the same network with conv2 1.3x wider (83 filters instead of
  64; 1.3x the multiply-adds of the layers that dominate), trained with the same recipe, exported
  to every variant and checked by parity. Gated ``--rounds`` times with the defaults under the
  same load. Expected: exit 4 with the latency checks failing, every time. The ratio the
  gate measured is reported.
- **A/B accuracy**: a new release of the same CNN trained for one epoch on 40,000 images instead of
  six on 55,000 (about half a point less accurate on 10,000 test images; measured and reported),
  every variant. Gated with the defaults ``--rounds`` times (accuracy is deterministic; latency is
  measured too). Expected: exit 4 with the accuracy checks failing, every time.

Writes results/gate.json and GATE.md (every number from the JSON).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import BENCHMARKS, RESULTS, cpu_text, parser, run_toolkit

from toolkit import schema
from toolkit.artifacts import atomic_write_json, atomic_write_text, read_json
from toolkit.exportdir import ExportDir
from toolkit.provenance import provenance, sha256_file

RESULT = Path(__file__).with_suffix(".json").name  # results/gate.json, named after this script
CASES = ("aa", "aa_equivalent", "ab_latency", "ab_accuracy")
CASE_NAMES = {"aa": "A/A", "aa_equivalent": "A/A equivalent", "ab_latency": "A/B latency", "ab_accuracy": "A/B accuracy"}
WEAK_TRAIN_LIMIT = 40_000  # one epoch on these: validation 98.68% against the six-epoch model's 99.3% (about half a point)

LOAD_SCRIPT = """
import time, numpy as np
rng = np.random.default_rng(0)
a = rng.random((384, 384), dtype=np.float32)
while True:
    end = time.perf_counter() + rng.uniform(0.5, 2.0)
    while time.perf_counter() < end:
        a = np.tanh(a @ a)
    time.sleep(rng.uniform(0.0, 1.0))
"""


def toolkit(*args, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = run_toolkit(*args, env=env, capture=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"toolkit {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def background_load(env: dict) -> subprocess.Popen:
    single = {**env, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT], env=single, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def train_variant(out: Path, env: dict, *, wide: bool, epochs: int | None, train_limit: int | None = None) -> Path:
    """A new release: the seed CNN (or its conv2 1.3x wider) trained with the toolkit's recipe (``epochs``: None
    for the default), exported to every variant, checked by parity against its own model."""
    out.mkdir(parents=True, exist_ok=True)
    script = f"""
from pathlib import Path
from toolkit.config import TrainConfig
from toolkit import model as m, train
if {wide}:  # the seed CNN with conv2 83 filters wide instead of 64 (1.3x)
    import dataclasses, functools
    m.ARCHITECTURES["cnn"] = dataclasses.replace(m.ARCHITECTURES["cnn"],
                                                 build=functools.partial(m.build_cnn, conv2_filters=83))
train.train(TrainConfig.for_arch("cnn", out=Path({str(out)!r}), epochs={epochs!r}, train_limit={train_limit!r},
                                 verbose=False))
"""
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    toolkit("export", "--exports", str(out), "--force", env=env)
    toolkit("parity", "--exports", str(out), "--quiet", env=env, check=False)
    return out


def equivalent_variant(baseline: Path, out: Path, env: dict) -> Path:
    """The baseline's model with conv1's filters permuted (and conv2's input channels to match): the same
    function, other bytes in every exported file; exported and checked by parity as a release would be."""
    out.mkdir(parents=True, exist_ok=True)
    script = f"""
import numpy as np, keras
model = keras.models.load_model({str(ExportDir(baseline).model_path)!r})
perm = np.random.default_rng(0).permutation(model.get_layer("conv1").filters)
k1, b1 = model.get_layer("conv1").get_weights()
model.get_layer("conv1").set_weights([k1[..., perm], b1[perm]])
k2, b2 = model.get_layer("conv2").get_weights()
model.get_layer("conv2").set_weights([k2[:, :, perm, :], b2])
model.save({str(ExportDir(out).model_path)!r})
"""
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    toolkit("export", "--exports", str(out), "--force", env=env)
    toolkit("parity", "--exports", str(out), "--quiet", env=env, check=False)
    return out


def gate(baseline: Path, new: Path, work: Path, env: dict, tag: str) -> dict:
    start = time.perf_counter()
    proc = toolkit("gate", "--baseline", baseline, "--exports", new, "--json", work / f"{tag}.json",
                   "--quiet", env=env, check=False)
    doc = schema.Gate.read_file(work / f"{tag}.json")
    checks = [c for c in doc.checks if c["kind"] in ("accuracy", "latency")]
    return {"exit_code": proc.returncode, "verdict": doc["verdict"], "seconds": round(time.perf_counter() - start, 1),
            "checks": [{"kind": c["kind"], "name": c["name"], "status": c["status"],
                        **({"ratio": c["values"]["ratio"], "ratio_interval": c["values"]["ratio_interval"],
                            "bound": c["values"]["bound"]} if c["kind"] == "latency" else {}),
                        **({"drop_points": c["values"]["drop_points"], "drop_interval_points":
                            c["values"]["drop_interval_points"]} if c["kind"] == "accuracy" and "drop_points"
                           in c.get("values", {}) else {})} for c in checks]}


def gate_defaults() -> str:
    """What `toolkit gate` does when given only --baseline and --exports, from its settings' defaults."""
    from toolkit.gate import GateConfig

    d = {f.name: f.default for f in dataclasses.fields(GateConfig) if f.default is not dataclasses.MISSING}
    batches, threads = d["latency_batch_sizes"], d["latency_threads"]
    return (f"toolkit gate --baseline B --exports N (accuracy margin {d['accuracy_margin_points']:g} points, latency "
            f"margin {d['latency_margin']:.0%}, {', '.join(d['ship']) or 'the int8 variants'} at batch "
            f"{', '.join(map(str, batches))}, {', '.join(map(str, threads))} thread{'s' if threads != (1,) else ''}, "
            f"{d['latency_rounds']} re-measurement rounds)")


def shipped(runs: list[dict]) -> list[str]:
    """The variants the gate timed (its default --ship), as its latency checks ("VARIANT/RUNTIME/...") name them."""
    return list(dict.fromkeys(c["name"].split("/")[0] for r in runs for c in r["checks"] if c["kind"] == "latency"))


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--exports", type=Path, default=Path("exports"))
    p.add_argument("--work", type=Path, default=Path("/tmp/toolkit-gate-bench"))
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES,
                   help="re-run these cases only; the others' runs are kept from the committed JSON (with --keep-work)")
    p.add_argument("--keep-work", action="store_true",
                   help="reuse the exports already in --work (same baseline, trained releases) instead of rebuilding")
    args = p.parse_args()
    env = dict(os.environ)
    work = args.work
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    baseline = work / "baseline"
    if not baseline.is_dir():
        shutil.copytree(args.exports, baseline, ignore=shutil.ignore_patterns("bench*", "gate*", "report*"),
                        symlinks=True)
    if not (baseline / schema.PARITY).is_file():
        toolkit("parity", "--exports", str(baseline), "--quiet", env=env)

    same = work / "same"
    if not same.is_dir():
        shutil.copytree(baseline, same, symlinks=True)
    built = lambda d: (d / schema.PARITY).is_file()  # noqa: E731
    equal = work / "equivalent" if built(work / "equivalent") else equivalent_variant(baseline, work / "equivalent", env)
    slow = work / "slower" if built(work / "slower") else train_variant(work / "slower", env, wide=True, epochs=None)
    weak = work / "worse" if built(work / "worse") else \
        train_variant(work / "worse", env, wide=False, epochs=1, train_limit=WEAK_TRAIN_LIMIT)
    parity = {name: schema.Parity.read(d) for name, d in
              (("baseline", baseline), ("equivalent", equal), ("slower", slow), ("worse", weak))}

    kept = read_json(args.out / RESULT) if set(args.cases) != set(CASES) else {}
    runs: dict[str, list[dict]] = {k: ([] if k in args.cases else kept["runs"][k]) for k in CASES}
    rerun = {**kept.get("cases_rerun", {}), **({k: {"commit": provenance()["git_commit"],
                                                    "created": provenance()["created"]} for k in args.cases}
                                               if kept else {})}
    load = background_load(env)
    try:
        for i in range(args.rounds):
            for key, new in (("aa", same), ("aa_equivalent", equal), ("ab_latency", slow), ("ab_accuracy", weak)):
                if key not in args.cases:
                    continue
                runs[key].append(gate(baseline, new, work, env, f"{key}-{i}"))
                r = runs[key][-1]
                print(f"{key} {i + 1}/{args.rounds}: exit {r['exit_code']} ({r['verdict']}, {r['seconds']} s)",
                      flush=True)
    finally:
        load.kill()

    def summary(key: str) -> dict:
        rs = runs[key]
        latency = [c for r in rs for c in r["checks"] if c["kind"] == "latency"]
        return {"runs": len(rs), "exit_0": sum(r["exit_code"] == 0 for r in rs),
                "exit_4": sum(r["exit_code"] == 4 for r in rs),
                "verdicts": {v: sum(r["verdict"] == v for r in rs) for v in ("pass", "inconclusive", "fail")},
                "latency_statuses": {s: sum(c["status"] == s for c in latency) for s in ("pass", "inconclusive", "fail")},
                "latency_ratio_median": float(np.median([c["ratio"] for c in latency])) if latency else None,
                "latency_ratio_range": [float(min(c["ratio"] for c in latency)), float(max(c["ratio"] for c in latency))]
                if latency else None,
                "accuracy_failed_runs": sum(any(c["kind"] == "accuracy" and c["status"] == "fail" for c in r["checks"])
                                            for r in rs),
                "accuracy_statuses": {s: sum(c["status"] == s for r in rs for c in r["checks"] if c["kind"] == "accuracy"
                                             and "drop_points" in c) for s in ("pass", "inconclusive", "fail")},
                "seconds_median": float(np.median([r["seconds"] for r in rs]))}

    acc = lambda p, v: p["variants"][v]["accuracy"]  # noqa: E731
    doc = {
        "rounds": args.rounds,
        "defaults": gate_defaults(),
        "load": "a single-threaded 384x384 float32 matrix product loop in bursts of 0.5-2 s, idle 0-1 s between, "
                "running for the whole benchmark",
        "cases": {
            "aa": {"what": "a byte-for-byte copy of the export", **summary("aa")},
            "aa_equivalent": {"what": "the same model with conv1's filters permuted (conv2's inputs to match): the same "
                                      "function, every file other bytes", **summary("aa_equivalent"),
                              "files_differ": sorted(v for v in parity["equivalent"]["variants"]
                                                     if _sha(equal, v) != _sha(baseline, v)),
                              "test_accuracy": {v: {"baseline": acc(parity["baseline"], v),
                                                    "new": acc(parity["equivalent"], v)} for v in shipped(runs["aa"])}},
            "ab_latency": {"what": "a new release: the CNN with conv2 1.3x wider (83 filters), trained with the same "
                                   "recipe, every variant", **summary("ab_latency"),
                           "test_accuracy": {v: {"baseline": acc(parity["baseline"], v), "new": acc(parity["slower"], v)}
                                             for v in shipped(runs["aa"])}},
            "ab_accuracy": {"what": f"a new release: the CNN trained for one epoch on {WEAK_TRAIN_LIMIT:,} images "
                                    "instead of six on 55,000, every variant", **summary("ab_accuracy"),
                            "test_accuracy": {v: {"baseline": acc(parity["baseline"], v), "new": acc(parity["worse"], v)}
                                              for v in shipped(runs["aa"])}},
        },
        "runs": runs,
        "export": {"path": str(args.exports), "generation": schema.Manifest.read(args.exports).get("generation"),
                   "model_sha256": sha256_file(ExportDir(args.exports).model_path)},
        "provenance": kept.get("provenance") or provenance(),
        **({"cases_rerun": rerun} if rerun else {}),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / RESULT, doc)
    atomic_write_text(BENCHMARKS / "GATE.md", markdown(doc))
    print(f"wrote {args.out / RESULT} and {BENCHMARKS / 'GATE.md'}")
    return 0


def _sha(directory: Path, variant: str) -> tuple | None:
    """The variant's bytes as the gate compares them (its file and the companions that are part of the model)."""
    from toolkit.gate import file_identities

    return file_identities(schema.Manifest.read(directory)).get(variant)


def _undecided(runs: list[dict]) -> str:
    """Which variants' accuracy checks were inconclusive (identical predictions on too few images)."""
    names = sorted({c["name"] for r in runs for c in r["checks"] if c["kind"] == "accuracy"
                    and c["status"] == "inconclusive"})
    return (f" (inconclusive: {', '.join(names)}, the same predictions on every image of a sample too small to show a "
            "drop under the margin)") if names else ""


def band(runs: list[dict]) -> dict | None:
    """What the A/A latency checks' interval widths let the gate see: a ratio fails from bound x e^h and passes
    below bound x e^-h (h: the half-width of the interval in log space; toolkit/gate.py)."""
    import math

    checks = [c for r in runs for c in r["checks"] if c["kind"] == "latency"]
    if not checks:
        return None
    half = [math.log(c["ratio_interval"][1] / c["ratio"]) for c in checks]
    bound = checks[0].get("bound", 1.1)
    fails = sorted(bound * math.exp(h) for h in half)
    passes = sorted(bound * math.exp(-h) for h in half)
    return {"bound": bound, "checks": len(checks), "fails_from_median": float(np.median(fails)),
            "fails_from_range": [fails[0], fails[-1]], "passes_below_median": float(np.median(passes)),
            "passes_below_range": [passes[0], passes[-1]]}


def markdown(doc: dict) -> str:
    m = doc["provenance"]["machine"]
    c = doc["cases"]
    aa, lat, acc = c["aa"], c["ab_latency"], c["ab_accuracy"]
    eq = c.get("aa_equivalent")  # results before the equivalent-model case have none
    lines = [
        "# The CI gate, measured: A/A and A/B",
        "",
        "Generated by `python benchmarks/gate.py` from `results/gate.json`; every number below is read from it.",
        "",
        f"**Machine**: {cpu_text(m)}, {m['cpu_count']} cores, shared. Commit "
        f"`{doc['provenance']['git_commit']}`, {doc['provenance']['created']}. **Defaults**: {doc['defaults']}. "
        f"**Background load** during every run: {doc['load']}."
        + "".join(f" The {CASE_NAMES[k]} case was re-run at commit `{v['commit']}`, {v['created']}, on the same machine "
                  "and exports." for k, v in doc.get("cases_rerun", {}).items()),
        "",
        "| case | what | runs | exit 0 | exit 4 | verdict pass / inconclusive / fail | latency checks pass / "
        "inconclusive / fail | measured p50 ratio, median (range) | median seconds per gate run |",
        "|---|---|---:|---:|---:|---|---|---|---:|",
    ]
    cases = [("A/A", aa), *([("A/A equivalent", eq)] if eq else []), ("A/B latency", lat), ("A/B accuracy", acc)]
    for name, case in cases:
        v, ls = case["verdicts"], case["latency_statuses"]
        ratio = (f"{case['latency_ratio_median']:.3f} ({case['latency_ratio_range'][0]:.3f} to "
                 f"{case['latency_ratio_range'][1]:.3f})") if case["latency_ratio_median"] else "-"
        lines.append(f"| {name} | {case['what']} | {case['runs']} | {case['exit_0']} | {case['exit_4']} | "
                     f"{v['pass']} / {v['inconclusive']} / {v['fail']} | {ls['pass']} / {ls['inconclusive']} / "
                     f"{ls['fail']} | {ratio} | {case['seconds_median']:.0f} |")
    lines += ["", "Test accuracy of the shipped variants in each case (parity on all test images):", "",
              "| case | variant | baseline | new | drop (points) |", "|---|---|---:|---:|---:|"]
    for name, case in [*([("A/A equivalent", eq)] if eq else []), ("A/B latency", lat), ("A/B accuracy", acc)]:
        for variant, a in case["test_accuracy"].items():
            lines.append(f"| {name} | {variant} | {a['baseline']:.2%} | {a['new']:.2%} | "
                         f"{(a['baseline'] - a['new']) * 100:+.2f} |")
    passed_aa = aa["exit_0"]
    lines += [
        "",
        f"- **A/A**: {passed_aa} of {aa['runs']} runs exit 0 ({aa['verdicts']['pass']} pass, "
        f"{aa['verdicts']['inconclusive']} inconclusive); each family of checks has at most a 2.5% chance of a "
        "false alarm (two-sided Bonferroni intervals, a check fails only beyond one end), so a run may fail "
        "at most about 5% of the time.",
        *([f"- **A/A equivalent**: {eq['exit_0']} of {eq['runs']} runs exit 0 ({eq['verdicts']['pass']} pass, "
           f"{eq['verdicts']['inconclusive']} inconclusive); the variants whose files differ in bytes "
           f"({', '.join(eq['files_differ'])}) had their accuracy checks compared image by image: "
           f"{eq['accuracy_statuses']['pass']} pass, {eq['accuracy_statuses']['inconclusive']} inconclusive, "
           f"{eq['accuracy_statuses']['fail']} fail{_undecided(doc['runs']['aa_equivalent'])}."] if eq else []),
        f"- **A/B latency**: {lat['exit_4']} of {lat['runs']} runs exit 4; the latency checks failed "
        f"{lat['latency_statuses']['fail']} times of {sum(lat['latency_statuses'].values())}.",
        f"- **A/B accuracy**: {acc['accuracy_failed_runs']} of {acc['runs']} runs fail an accuracy check "
        f"({acc['exit_4']} exit 4).",
        f"- **A/B latency** runs also failing an accuracy check: {lat['accuracy_failed_runs']} of {lat['runs']} (the "
        "wider model is a different training).",
    ]
    b = band(doc["runs"]["aa"])
    if b:
        lines.append(
            f"- **The smallest slowdown that fails**, from the {b['checks']} A/A latency checks' interval widths (a "
            f"ratio fails when its interval's lower end exceeds {b['bound']:g}): about {b['fails_from_median']:.3f}x "
            f"(from {b['fails_from_range'][0]:.3f}x to {b['fails_from_range'][1]:.3f}x); it passes below about "
            f"{b['passes_below_median']:.3f}x ({b['passes_below_range'][0]:.3f}x to {b['passes_below_range'][1]:.3f}x); "
            "between, inconclusive. More `--latency-rounds` narrow the band.")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
