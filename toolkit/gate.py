"""`toolkit gate`: is a new export at least as good as the release before it? For CI: fail the
build (exit 4) when an export got less accurate, slower or bigger, and not because of noise.

Checks, one line each in the verdict:

- presence: every variant of the baseline is still exported;
- parity: every new variant passes its own parity gates;
- accuracy: non-inferiority, new against old, paired on the same test images (the per-image
  predictions both parity runs saved): the upper 95% bound of the drop (Newcombe's paired score
  interval) must stay under ``--accuracy-margin`` points;
- latency: p50 and p90 of every bench row present in both (variant, runtime, device, batch,
  threads), judged with intervals from the kept samples (the distribution-free order-statistic
  interval, widened to the spread of the quantile over ten contiguous blocks of the run, so that
  a run that drifted is not read as precise): a regression only when the new interval lies wholly
  above the old one's upper bound times 1 + ``--latency-margin``. Rows measured on another machine are reported, not gated,
  unless ``--same-machine-only false``;
- size and memory: model bytes against ``--max-bytes VARIANT=N``, the TFLM arena against
  ``--max-arena N``.

Writes ``gate.json`` and ``gate.md`` (``--json``) and, with ``--junit FILE``, JUnit XML.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toolkit import artifacts
from toolkit.errors import DataError, UsageError
from toolkit.provenance import provenance
from toolkit.stats import newcombe_paired_interval

GATE_JSON = "gate.json"


@dataclass(frozen=True)
class GateConfig:
    baseline: Path
    exports: Path = Path("exports")
    accuracy_margin_points: float = 0.1
    latency_margin: float = 0.10  # relative
    same_machine_only: bool = True
    max_bytes: dict = field(default_factory=dict)  # variant -> bytes
    max_arena: int | None = None
    json_path: Path | None = None
    junit: Path | None = None
    verbose: bool = True


@dataclass
class Check:
    kind: str  # presence, parity, accuracy, latency, size, memory
    name: str  # what is checked, e.g. "tflite-int8" or "tflite-int8/litert/cpu/b1/t2 p50"
    passed: bool | None  # None: reported, not gated
    detail: str
    values: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "not gated"}[self.passed]


# ----------------------------------------------------------------------------- inputs
def _load(directory: Path, name: str, required: bool) -> dict | None:
    path = Path(directory) / name
    if not path.is_file():
        if required:
            raise DataError(f"{path} not found", hint=f"run `toolkit {name.split('.')[0]} --exports {directory}` first")
        return None
    return artifacts.read_json(path)


def _predictions(directory: Path, parity: dict) -> dict[str, np.ndarray] | None:
    name = parity.get("predictions_file")
    path = Path(directory) / name if name else None
    if path is None or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _machine(doc: dict) -> tuple:
    m = doc.get("provenance", {}).get("machine", {})
    return (m.get("cpu"), m.get("cpu_count"), tuple(g.get("name") for g in m.get("gpus", [])))


# ----------------------------------------------------------------------------- checks
def accuracy_checks(old: dict, new: dict, old_pred: dict | None, new_pred: dict | None, margin: float) -> list[Check]:
    checks = []
    # the plain int8 models shown beside accuracy-controlled variants are not shipped: not gated
    common = [v for v in new["variants"] if v in old["variants"] and "informational" not in new["variants"][v]]
    same_data = (old.get("dataset", {}).get("fingerprint") == new.get("dataset", {}).get("fingerprint")
                 and old_pred is not None and new_pred is not None
                 and np.array_equal(old_pred["labels"], new_pred["labels"]))
    for v in common:
        key = f"variant:{v}"
        if not same_data or key not in old_pred or key not in new_pred:
            why = ("the two parity runs did not save per-image predictions (re-run `toolkit parity`)"
                   if old_pred is None or new_pred is None or key not in old_pred or key not in new_pred
                   else "the two parity runs used different test images")
            checks.append(Check("accuracy", v, False, f"cannot compare: {why}"))
            continue
        labels = new_pred["labels"]
        old_idx, new_idx = old_pred.get(f"indices:{v}"), new_pred.get(f"indices:{v}")
        if (old_idx is None) != (new_idx is None) or (old_idx is not None and not np.array_equal(old_idx, new_idx)):
            checks.append(Check("accuracy", v, False, "cannot compare: the runs used different image samples"))
            continue
        y = labels if new_idx is None else labels[new_idx]
        old_ok, new_ok = old_pred[key] == y, new_pred[key] == y
        e, f = int((old_ok & new_ok).sum()), int((old_ok & ~new_ok).sum())  # f: old right, new wrong
        g, h = int((~old_ok & new_ok).sum()), int((~old_ok & ~new_ok).sum())
        lo, hi = newcombe_paired_interval(e, f, g, h)  # p1 - p2 = old - new = the drop
        drop, upper = (f - g) / len(y) * 100, hi * 100
        checks.append(Check(
            "accuracy", v, upper < margin,
            f"accuracy {old_ok.mean():.2%} -> {new_ok.mean():.2%}, drop {drop:+.2f} pts, upper 95% bound "
            f"{upper:+.2f} (must be < {margin:g}); {f} images newly wrong, {g} newly right of {len(y):,}",
            {"old_accuracy": float(old_ok.mean()), "new_accuracy": float(new_ok.mean()), "drop_points": drop,
             "drop_ci95_points": [lo * 100, upper], "newly_wrong": f, "newly_right": g, "images": len(y),
             "margin_points": margin}))
    return checks


BLOCKS = 10  # contiguous blocks of a row's samples, in the order they were taken


def interval(row: dict, stat: str) -> list[float]:
    """A row's p50 or p90 interval: the order-statistic 95% interval of all its samples, widened to
    the range of the same quantile over 10 contiguous blocks of them. The order-statistic interval
    assumes independent samples; a run whose speed drifts (another job on the machine for part of
    it) shows that drift between its blocks, and the gate must not call it a regression."""
    from toolkit.timing import quantile_interval

    q = {"p50": 0.5, "p90": 0.9}[stat]
    samples = np.asarray(row["samples_ms"], dtype=np.float64)
    lo, hi = quantile_interval(np.sort(samples), q)
    if len(samples) >= 5 * BLOCKS:
        blocks = [np.quantile(block, q) for block in np.array_split(samples, BLOCKS)]
        lo, hi = min(lo, float(min(blocks))), max(hi, float(max(blocks)))
    return [lo, hi]


def latency_checks(old: dict, new: dict, margin: float, same_machine_only: bool) -> list[Check]:
    key = lambda r: (r["variant"], r["runtime"], r["device"], r["batch_size"], r["threads"])  # noqa: E731
    old_rows = {key(r): r for r in old.get("results", [])}
    same_machine = _machine(old) == _machine(new)
    checks = []
    for r in new.get("results", []):
        o = old_rows.get(key(r))
        if o is None:
            continue
        name = f"{r['variant']}/{r['runtime']}/{r['device']}/batch {r['batch_size']}/{r['threads']} thr"
        for stat in ("p50", "p90"):
            (olo, ohi), (nlo, nhi) = interval(o, stat), interval(r, stat)
            regressed = nlo > ohi * (1 + margin)
            ratio = r[f"{stat}_ms"] / o[f"{stat}_ms"]
            detail = (f"{stat} {o[f'{stat}_ms']:.4g} -> {r[f'{stat}_ms']:.4g} ms ({ratio:.2f}x); 95% CI "
                      f"{olo:.4g}-{ohi:.4g} -> {nlo:.4g}-{nhi:.4g} ms; a regression when the new interval lies "
                      f"above the old upper bound x {1 + margin:g}")
            passed: bool | None = not regressed
            if not same_machine and same_machine_only:
                passed = None
                detail += f"; measured on another machine ({_machine(old)[0]} vs {_machine(new)[0]}): not gated"
            checks.append(Check("latency", f"{name} {stat}", passed, detail,
                                {"old_ms": o[f"{stat}_ms"], "new_ms": r[f"{stat}_ms"], "old_ci95_ms": [olo, ohi],
                                 "new_ci95_ms": [nlo, nhi], "ratio": ratio, "margin": margin}))
    return checks


def failed_row_checks(parity: dict, bench: dict | None) -> list[Check]:
    """Rows of the new export that a runtime could not load or run (parity's and bench's ``failed``):
    neither a pass nor a regression. Shown, counted as incomplete, and the gate exits 7 when nothing
    else failed."""
    checks = []
    for f in parity.get("failed") or []:
        checks.append(Check("incomplete", f"{f['key']} on {f['runtime']}", None,
                            f"parity could not check it ({f['stage']}): {f['reason']}", {"incomplete": True}))
    for f in (bench or {}).get("failed") or []:
        checks.append(Check("incomplete", f"{f['variant']}/{f['runtime']}/{f['device']}/batch "
                            f"{','.join(map(str, f['batch_sizes']))}/{f['threads']} thr", None,
                            f"bench could not measure it ({f['stage']}): {f['reason']}", {"incomplete": True}))
    return checks


def run_gate(cfg: GateConfig) -> dict:
    if cfg.accuracy_margin_points <= 0 or cfg.latency_margin < 0:
        raise UsageError("--accuracy-margin must be positive and --latency-margin not negative")
    with artifacts.reading(cfg.baseline) as old_manifest, artifacts.reading(cfg.exports) as new_manifest:
        old_parity = _load(cfg.baseline, "parity.json", required=True)
        new_parity = _load(cfg.exports, "parity.json", required=True)
        old_bench, new_bench = _load(cfg.baseline, "bench.json", False), _load(cfg.exports, "bench.json", False)
        checks: list[Check] = []
        new_variants = {e["variant"]: e for e in new_manifest["artifacts"]}
        for e in old_manifest["artifacts"]:
            present = e["variant"] in new_variants
            checks.append(Check("presence", e["variant"], present,
                                "still exported" if present else "exported by the baseline, missing from the new export"))
        for name, v in new_parity["variants"].items():
            if "informational" in v:  # a plain int8 model kept beside its accuracy-controlled variant
                continue
            failed = [g for g in v["gates"] if not g["passed"]]
            checks.append(Check("parity", name, not failed, "passes its parity gates" if not failed else
                                "fails its parity gates: " + "; ".join(
                                    f"{g['metric']} = {g['value']:.6g} (must be {g['op']} {g['bound']:g})" for g in failed)))
        checks += accuracy_checks(old_parity, new_parity, _predictions(cfg.baseline, old_parity),
                                  _predictions(cfg.exports, new_parity), cfg.accuracy_margin_points)
        if old_bench and new_bench:
            checks += latency_checks(old_bench, new_bench, cfg.latency_margin, cfg.same_machine_only)
        checks += failed_row_checks(new_parity, new_bench)
        unknown = sorted(set(cfg.max_bytes) - set(new_variants))
        if unknown:
            raise UsageError(f"--max-bytes names variant(s) {', '.join(unknown)} not in the new export "
                             f"(exported: {', '.join(new_variants)})")
        for variant, budget in cfg.max_bytes.items():
            size = new_variants[variant].get("model_bytes", new_variants[variant]["bytes"])
            checks.append(Check("size", variant, size <= budget, f"{size:,} bytes (budget {budget:,})",
                                {"bytes": size, "budget": budget}))
        if cfg.max_arena is not None:
            arenas = {v: e["arena"]["arena_bytes"] for v, e in new_variants.items() if e.get("arena")}
            if not arenas:
                checks.append(Check("memory", "tflm arena", False, "--max-arena given but the export has no "
                                    "tflite-micro variant with a measured arena"))
            for variant, arena in arenas.items():
                checks.append(Check("memory", f"{variant} arena", arena <= cfg.max_arena,
                                    f"TFLM arena {arena:,} bytes (budget {cfg.max_arena:,})",
                                    {"arena_bytes": arena, "budget": cfg.max_arena}))
    gated = [c for c in checks if c.passed is not None]
    return {
        "passed": all(c.passed for c in gated),
        "baseline": str(cfg.baseline), "exports": str(cfg.exports),
        "baseline_generation": old_manifest.get("generation"), "export_generation": new_manifest.get("generation"),
        "summary": {"checks": len(checks), "failed": sum(c.passed is False for c in checks),
                    "not_gated": sum(c.passed is None for c in checks),
                    "incomplete": sum(c.kind == "incomplete" for c in checks)},
        "checks": [asdict(c) | {"status": c.status} for c in checks],
        "settings": {"accuracy_margin_points": cfg.accuracy_margin_points, "latency_margin": cfg.latency_margin,
                     "same_machine_only": cfg.same_machine_only, "max_bytes": cfg.max_bytes,
                     "max_arena": cfg.max_arena},
        "statistics": {"accuracy": "Newcombe (1998) paired score interval on per-image correctness, old vs new",
                       "latency": "order-statistic 95% interval of p50/p90 from every kept sample, widened to the "
                                  f"range of the quantile over {BLOCKS} contiguous blocks of the run"},
        "provenance": provenance(),
    }


# ----------------------------------------------------------------------------- outputs
def markdown(doc: dict) -> str:
    lines = ["# Gate: new export against the baseline", "",
             f"New `{doc['exports']}` (generation {doc['export_generation']}) against baseline `{doc['baseline']}` "
             f"(generation {doc['baseline_generation']}): **{'PASS' if doc['passed'] else 'FAIL'}** "
             f"({doc['summary']['failed']} failed, {doc['summary']['not_gated']} not gated, "
             f"{doc['summary']['checks']} checks).", "",
             "| check | what | status | detail |", "|---|---|---|---|"]
    for c in doc["checks"]:
        status = "**FAIL**" if c["passed"] is False else c["status"]
        lines.append(f"| {c['kind']} | {c['name']} | {status} | {c['detail']} |")
    lines += ["", f"Statistics: accuracy: {doc['statistics']['accuracy']}; latency: {doc['statistics']['latency']}.", ""]
    return "\n".join(lines)


def junit_xml(doc: dict) -> str:
    """JUnit XML (the format CI systems read): one testcase per check."""
    import xml.etree.ElementTree as ET

    checks = doc["checks"]
    suite = ET.Element("testsuite", name="toolkit gate", tests=str(len(checks)),
                       failures=str(sum(c["passed"] is False for c in checks)),
                       skipped=str(sum(c["passed"] is None for c in checks)), errors="0")
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"toolkit.gate.{c['kind']}", name=c["name"])
        if c["passed"] is False:
            ET.SubElement(case, "failure", message=c["detail"]).text = c["detail"]
        elif c["passed"] is None:
            ET.SubElement(case, "skipped", message=c["detail"])
        ET.SubElement(case, "system-out").text = c["detail"]
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_outputs(doc: dict, cfg: GateConfig) -> dict[str, Path]:
    json_path = Path(cfg.json_path) if cfg.json_path else Path(cfg.exports) / GATE_JSON
    paths = {"json": json_path, "markdown": json_path.with_suffix(".md")}
    artifacts.atomic_write_json(json_path, doc)
    artifacts.atomic_write_text(paths["markdown"], markdown(doc))
    if cfg.junit:
        paths["junit"] = Path(cfg.junit)
        artifacts.atomic_write_text(paths["junit"], junit_xml(doc))
    return paths


def print_verdict(doc: dict, stream=sys.stdout) -> None:
    for c in doc["checks"]:
        print(f"{c['status']:<9} {c['kind']:<8} {c['name']}: {c['detail']}", file=stream)
