"""`toolkit gate`: is a new export at least as good as the release before it? For CI: fail the
build (exit 4) when an export got less accurate, slower or bigger, and not because of noise.

Every check is a verdict of toolkit/verdicts.py (pass, fail or inconclusive on an interval), one
line each:

- presence: every variant of the baseline is still exported;
- parity: every new variant's own parity verdict;
- accuracy: non-inferiority, new against old, paired on the same test images (the per-image
  predictions both parity runs saved): the drop must be at most ``--accuracy-margin`` points on
  Newcombe's paired interval. The same file (equal sha256) passes without sampling; identical
  predictions are never a regression. A TFLM variant checked on a sample is compared on that sample;
- latency: the shipped variants (``--ship``; default the int8 variants) at ``--latency-batch-sizes``
  and ``--latency-threads`` are **re-measured**, baseline and new file in the same run, in turns
  (ABAB within each of ``--latency-rounds`` fresh processes, the order reversed every other round):
  the ratio new/old of the p50s, its interval from the rounds' log-ratios (Student's t), must be at
  most 1 + ``--latency-margin``. Numbers stored in two bench.json files come from two runs on a
  shared machine: they are shown as information, never gated;
- size and memory: model bytes against ``--max-bytes VARIANT=N``, the TFLM arena against
  ``--max-arena N`` (exact).

Family-wise error: each interval is two-sided at confidence 1 - 0.05/m for m checks (Bonferroni), and a
check fails only when its whole interval lies beyond the bound, so a false alarm needs the truth outside
one tail of one interval: at most 2.5% for the accuracy checks together, and 2.5% for the latency checks
together (a false pass of a real regression, likewise, at most 2.5%).

What the latency check can see: a ratio fails when its interval's lower end exceeds 1 + margin, that is
from about (1 + margin) x e^h, where h is the interval's half-width in log space; it passes below about
(1 + margin) x e^-h and is inconclusive between. Each latency line says where these lie for its own
width; benchmarks/GATE.md measures h on a shared 2-core machine.

Exit: 4 when a check fails (or, with ``--strict``, is inconclusive); 7 when rows of the new export
could not be checked or measured; else 0. Writes ``gate.json`` and ``gate.md`` (``--json``) and,
with ``--junit FILE``, JUnit XML.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toolkit import artifacts, schema
from toolkit.errors import UsageError
from toolkit.exportdir import ExportDir
from toolkit.provenance import provenance
from toolkit.verdicts import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Verdict,
    combine,
    non_inferior,
    ratio_at_most,
    same_file,
)

FAMILY_ALPHA = 0.05
INFO, INCOMPLETE = "info", "incomplete"  # statuses besides a verdict's: shown, not gated; not measured


@dataclass(frozen=True)
class GateConfig:
    baseline: ExportDir
    exports: ExportDir = Path("exports")
    accuracy_margin_points: float = 0.1
    latency_margin: float = 0.10  # relative: new p50 at most (1 + margin) x old
    ship: tuple[str, ...] = ()  # VARIANT or VARIANT@RUNTIME whose latency is gated; () = the int8 variants
    latency_batch_sizes: tuple[int, ...] = (1,)
    latency_threads: tuple[int, ...] = (1,)
    latency_rounds: int = 5  # fresh processes, each timing both files in turns; 0 = no latency checks
    latency_block_seconds: float = 0.1  # per turn; 4 turns per file per round
    data_dir: Path | None = None
    max_bytes: dict = field(default_factory=dict)  # variant -> bytes
    max_arena: int | None = None
    npu_budgets: dict = field(default_factory=dict)  # "sram" | "flash" | "ms" -> {NPU configuration: budget}
    json_path: Path | None = None
    junit: Path | None = None
    strict: bool = False
    verbose: bool = True

    def __post_init__(self):
        for name in ("baseline", "exports"):
            object.__setattr__(self, name, ExportDir.of(getattr(self, name)))


@dataclass
class Check:
    kind: str  # presence, parity, accuracy, latency, size, memory, incomplete
    name: str  # what is checked, e.g. "tflite-int8" or "tflite-int8/litert/batch 1/1 thr"
    status: str  # pass, fail, inconclusive; info (shown, not gated); incomplete (could not be checked)
    detail: str
    values: dict = field(default_factory=dict)

    @classmethod
    def of(cls, kind: str, name: str, verdict: Verdict, detail: str, values: dict | None = None) -> Check:
        return cls(kind, name, verdict.status, detail, {**(values or {}), "verdict": verdict.to_json()})

    @property
    def passed(self) -> bool | None:
        """True for pass, False for fail, None otherwise (inconclusive, info, incomplete)."""
        return {PASS: True, FAIL: False}.get(self.status)


# ----------------------------------------------------------------------------- inputs
def _predictions(directory: ExportDir, parity: Mapping) -> dict[str, np.ndarray] | None:
    path = directory.parity_predictions(parity)
    if path is None or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _machine(doc: dict) -> tuple:
    m = doc.get("provenance", {}).get("machine", {})
    return (m.get("cpu"), m.get("cpu_count"), tuple(g.get("name") for g in m.get("gpus", [])))


# ----------------------------------------------------------------------------- checks
def file_identities(manifest: dict) -> dict[str, tuple]:
    """Each variant's bytes as the gate compares them: its file's sha256 and those of the companion files that are
    part of the model (an OpenVINO IR's .bin holds its weights: two IRs with the same .xml and other weights
    are different functions), not of the plain int8 model kept beside a controlled one."""
    return {e["variant"]: (e["sha256"], *sorted(c["sha256"] for c in e.get("companions", [])
                                                if c.get("role") != "plain-int8" and c.get("sha256")))
            for e in manifest.get("artifacts", [])}


def accuracy_checks(old: dict, new: dict, old_pred: dict | None, new_pred: dict | None, margin: float,
                    old_ids: dict | None = None, new_ids: dict | None = None) -> list[Check]:
    # the plain int8 models shown beside accuracy-controlled variants are not shipped: not gated
    common = [v for v in new["variants"] if v in old["variants"] and "informational" not in new["variants"][v]]
    confidence = 1 - FAMILY_ALPHA / max(1, len(common))
    same_data = (old.get("dataset", {}).get("fingerprint") == new.get("dataset", {}).get("fingerprint")
                 and old_pred is not None and new_pred is not None
                 and np.array_equal(old_pred["labels"], new_pred["labels"]))
    checks = []
    for v in common:
        key = f"variant:{v}"
        base = v.split("@")[0]
        old_sha = (old_ids or {}).get(base) or old["variants"][v].get("sha256")
        new_sha = (new_ids or {}).get(base) or new["variants"][v].get("sha256")
        if old_sha and old_sha == new_sha:
            checks.append(Check.of("accuracy", v, same_file("accuracy_drop_points"),
                                   "the same file as the baseline's (equal sha256): the same predictions on any image"))
            continue
        if not same_data or key not in old_pred or key not in new_pred:
            why = ("the two parity runs did not save per-image predictions (re-run `toolkit parity`)"
                   if old_pred is None or new_pred is None or key not in old_pred or key not in new_pred
                   else "the two parity runs used different test images")
            checks.append(Check("accuracy", v, INCONCLUSIVE, f"cannot compare: {why}"))
            continue
        labels = new_pred["labels"]
        old_idx, new_idx = old_pred.get(f"indices:{v}"), new_pred.get(f"indices:{v}")
        if (old_idx is None) != (new_idx is None) or (old_idx is not None and not np.array_equal(old_idx, new_idx)):
            checks.append(Check("accuracy", v, INCONCLUSIVE, "cannot compare: the runs used different image samples"))
            continue
        y = labels if new_idx is None else labels[new_idx]
        old_ok, new_ok = old_pred[key] == y, new_pred[key] == y
        verdict = non_inferior("accuracy_drop_points", old_ok, new_ok, margin, confidence=confidence)
        f, g = int((old_ok & ~new_ok).sum()), int((~old_ok & new_ok).sum())
        lo, hi = verdict.interval
        detail = (f"accuracy {old_ok.mean():.2%} -> {new_ok.mean():.2%}, drop {verdict.value:+.2f} pts, "
                  f"{confidence:.2%} CI {lo:+.2f} to {hi:+.2f} (must be <= {margin:g}); {f} images newly wrong, "
                  f"{g} newly right of {len(y):,}")
        if verdict.status == INCONCLUSIVE:
            detail += (f": inconclusive, about {verdict.images_to_decide:,} images would decide it"
                       if verdict.images_to_decide else ": inconclusive")
        checks.append(Check.of("accuracy", v, verdict, detail, {
            "old_accuracy": float(old_ok.mean()), "new_accuracy": float(new_ok.mean()), "drop_points": verdict.value,
            "drop_interval_points": [lo, hi], "confidence": confidence, "newly_wrong": f, "newly_right": g,
            "images": len(y), "margin_points": margin}))
    return checks


def stored_latency_checks(old: dict, new: dict) -> list[Check]:
    """Rows of two stored bench.json files: two runs on a shared machine, compared as information only."""
    key = lambda r: (r["variant"], r["runtime"], r["device"], r["batch_size"], r["threads"])  # noqa: E731
    old_rows = {key(r): r for r in old.get("results", [])}
    same_machine = _machine(old) == _machine(new)
    checks = []
    for r in new.get("results", []):
        o = old_rows.get(key(r))
        if o is None:
            continue
        name = f"{r['variant']}/{r['runtime']}/{r['device']}/batch {r['batch_size']}/{r['threads']} thr"
        ratio = r["p50_ms"] / o["p50_ms"]
        checks.append(Check("stored latency", name, INFO,
                            f"p50 {o['p50_ms']:.4g} -> {r['p50_ms']:.4g} ms ({ratio:.2f}x) in the two stored bench.json "
                            "runs" + ("" if same_machine else f" (on another machine: {_machine(old)[0]} vs "
                                                               f"{_machine(new)[0]})")
                            + ": information only, two runs on a shared machine are not compared",
                            {"old_p50_ms": o["p50_ms"], "new_p50_ms": r["p50_ms"], "ratio": ratio}))
    return checks


def _ship_targets(cfg: GateConfig, old_manifest: dict, new_manifest: dict) -> list[tuple[dict, dict, str]]:
    """(old entry, new entry, runtime) for every shipped variant present in both exports."""
    from toolkit import runners

    old = {e["variant"]: e for e in old_manifest["artifacts"]}
    new = {e["variant"]: e for e in new_manifest["artifacts"]}
    wanted = list(cfg.ship) or [v for v in new if v in old and new[v]["quantization"] == "int8"
                                and runners.default_for(new[v]["format"]).gate_retimes] or [v for v in new if v in old][:1]
    targets = []
    for item in wanted:
        variant, _, runtime = item.partition("@")
        if variant not in new or variant not in old:
            raise UsageError(f"--ship {item}: variant {variant!r} is not in both exports "
                             f"(in both: {', '.join(v for v in new if v in old)})")
        runtime = runtime or runners.default_for(new[variant]["format"]).name
        if new[variant]["format"] not in runners.get(runtime).formats:
            raise UsageError(f"--ship {item}: {runtime} does not run format {new[variant]['format']}")
        targets.append((old[variant], new[variant], runtime))
    return targets


def _band(bound: float, ratio: float, interval: tuple[float, float]) -> tuple[float, float]:
    """The ratios this interval's width would pass below and fail above: (1 + margin) x e^-h and x e^h, h
    the half-width in log space (the t interval is symmetric there)."""
    h = math.log(interval[1] / ratio)
    return bound * math.exp(-h), bound * math.exp(h)


def _ratio_interval(mean_log: float, sd_log: float, rounds: int, confidence: float) -> tuple[float, float]:
    """The ratio's interval from ``rounds`` log-ratios with this mean and standard deviation (Student's t)."""
    from scipy.stats import t as student

    half = float(student.ppf(1 - (1 - confidence) / 2, rounds - 1)) * sd_log / math.sqrt(rounds)
    return math.exp(mean_log - half), math.exp(mean_log + half)


def remeasured_latency_checks(cfg: GateConfig, old_manifest: dict, new_manifest: dict) -> list[Check]:
    """The shipped variants' baseline and new files, timed in turns in the same run (toolkit.bench's
    ``run_interleaved``); the ratio of p50s per round; a t interval on the rounds' mean log-ratio at
    the family-wise level."""
    from toolkit.config import BenchConfig
    from toolkit.inputs import test_images
    from toolkit.interleaved import run_interleaved
    from toolkit.progress import say

    targets = _ship_targets(cfg, old_manifest, new_manifest)
    settings = [(b, th) for b in cfg.latency_batch_sizes for th in cfg.latency_threads]
    m = len(targets) * len(settings)
    if not m:
        return []
    confidence = 1 - FAMILY_ALPHA / m
    images = test_images(BenchConfig(exports=cfg.exports, data_dir=cfg.data_dir), new_manifest,
                         max(cfg.latency_batch_sizes))
    bound = 1 + cfg.latency_margin
    checks = []
    for old_entry, new_entry, runtime in targets:
        paths = [cfg.baseline.verified(old_entry), cfg.exports.verified(new_entry)]
        for batch, threads in settings:
            name = f"{new_entry['variant']}/{runtime}/batch {batch}/{threads} thr"
            say(f"  re-measuring {name}: baseline and new in turns, {cfg.latency_rounds} fresh processes", cfg.verbose)
            try:
                rounds = run_interleaved(runtime, paths, threads, batch, images, rounds=cfg.latency_rounds,
                                         block_seconds=cfg.latency_block_seconds)
            except Exception as exc:  # the runtime cannot load or run one of the files: that row, not the gate
                from toolkit.errors import first_line

                checks.append(Check(INCOMPLETE, name, INCOMPLETE, f"could not re-measure it: {first_line(exc)}",
                                    {"incomplete": True}))
                continue
            p50 = np.array([[np.median(s) / 1e6 for s in r] for r in rounds])  # rounds x (old, new), ms
            logs = np.log(p50[:, 1] / p50[:, 0])
            mean, sd, k = float(logs.mean()), float(logs.std(ddof=1)), len(logs)
            ratio, interval = math.exp(mean), _ratio_interval(mean, sd, k, confidence)
            verdict = ratio_at_most("p50_ratio_new_over_old", ratio, interval, bound, k,
                                    resize=lambda n, mean=mean, sd=sd: _ratio_interval(mean, sd, n, confidence))
            band = _band(bound, ratio, interval)
            detail = (f"p50 {np.median(p50[:, 0]):.4g} -> {np.median(p50[:, 1]):.4g} ms, ratio {ratio:.3f} "
                      f"({confidence:.2%} CI {interval[0]:.3f} to {interval[1]:.3f}; must be <= {bound:g}), "
                      f"re-measured in turns over {k} fresh processes; at this width a ratio fails from about "
                      f"{band[1]:.3f}x and passes below {band[0]:.3f}x")
            if verdict.status == INCONCLUSIVE:
                detail += (f": inconclusive, about {verdict.images_to_decide} --latency-rounds would decide it"
                           if verdict.images_to_decide else ": inconclusive, the ratio sits on the bound")
            checks.append(Check.of("latency", name, verdict, detail, {
                "old_p50_ms_per_round": p50[:, 0].tolist(), "new_p50_ms_per_round": p50[:, 1].tolist(),
                "ratio": ratio, "ratio_interval": list(interval), "confidence": confidence, "bound": bound,
                "decides_below_and_above": list(band),
                "rounds": k, "samples_per_round": [[len(s) for s in r] for r in rounds]}))
    return checks


def failed_row_checks(parity: dict, bench: dict | None) -> list[Check]:
    """Rows of the new export that a runtime could not load or run (parity's and bench's ``failed``):
    neither a pass nor a regression. Shown, counted as incomplete, and the gate exits 7 when nothing
    else failed."""
    checks = []
    for f in parity.get("failed") or []:
        checks.append(Check(INCOMPLETE, f"{f['key']} on {f['runtime']}", INCOMPLETE,
                            f"parity could not check it ({f['stage']}): {f['reason']}", {"incomplete": True}))
    for f in (bench or {}).get("failed") or []:
        checks.append(Check(INCOMPLETE, f"{f['variant']}/{f['runtime']}/{f['device']}/batch "
                            f"{','.join(map(str, f['batch_sizes']))}/{f['threads']} thr", INCOMPLETE,
                            f"bench could not measure it ({f['stage']}): {f['reason']}", {"incomplete": True}))
    return checks


def _parity_check(name: str, v: dict) -> Check:
    gates = [Verdict.from_json(g) for g in v["gates"]]
    status = v.get("verdict") or combine(gates)
    shown = [g for g in gates if g.status == status and status != PASS]
    return Check("parity", name, status, "passes its parity gates" if status == PASS else
                 f"parity {status}: " + "; ".join(str(g) for g in shown))


def _npu_checks(cfg: GateConfig) -> list[Check]:
    """The NPU placement and budget checks on the two exports' footprint.json (toolkit/targets/checks.py)."""
    from toolkit.targets.checks import budget_checks, fallback_checks

    old, new = cfg.baseline.footprint(required=False), cfg.exports.footprint(required=False)
    return [Check(*row) for row in [*fallback_checks(old, new), *budget_checks(new, cfg.npu_budgets)]]


def run_gate(cfg: GateConfig) -> dict:
    if cfg.accuracy_margin_points <= 0 or cfg.latency_margin < 0:
        raise UsageError("--accuracy-margin must be positive and --latency-margin not negative")
    if cfg.latency_rounds and cfg.latency_rounds < 3:
        raise UsageError("--latency-rounds must be 0 (no latency checks) or at least 3 (an interval needs them)")
    with cfg.baseline.reading() as old_manifest, cfg.exports.reading() as new_manifest:
        old_parity, new_parity = cfg.baseline.parity(), cfg.exports.parity()
        old_bench, new_bench = cfg.baseline.bench(required=False), cfg.exports.bench(required=False)
        checks: list[Check] = []
        new_variants = {e["variant"]: e for e in new_manifest["artifacts"]}
        for e in old_manifest["artifacts"]:
            present = e["variant"] in new_variants
            checks.append(Check("presence", e["variant"], PASS if present else FAIL,
                                "still exported" if present else "exported by the baseline, missing from the new export"))
        for name, v in new_parity["variants"].items():
            if "informational" not in v:  # a plain int8 model kept beside its accuracy-controlled variant
                checks.append(_parity_check(name, v))
        checks += accuracy_checks(old_parity, new_parity, _predictions(cfg.baseline, old_parity),
                                  _predictions(cfg.exports, new_parity), cfg.accuracy_margin_points,
                                  file_identities(old_manifest), file_identities(new_manifest))
        if cfg.latency_rounds:
            checks += remeasured_latency_checks(cfg, old_manifest, new_manifest)
        if old_bench and new_bench:
            checks += stored_latency_checks(old_bench, new_bench)
        checks += failed_row_checks(new_parity, new_bench)
        unknown = sorted(set(cfg.max_bytes) - set(new_variants))
        if unknown:
            raise UsageError(f"--max-bytes names variant(s) {', '.join(unknown)} not in the new export "
                             f"(exported: {', '.join(new_variants)})")
        for variant, budget in cfg.max_bytes.items():
            size = schema.model_bytes(new_variants[variant])
            checks.append(Check("size", variant, PASS if size <= budget else FAIL, f"{size:,} bytes (budget {budget:,})",
                                {"bytes": size, "budget": budget}))
        checks += _npu_checks(cfg)
        if cfg.max_arena is not None:
            arenas = {v: e["arena"]["arena_bytes"] for v, e in new_variants.items() if e.get("arena")}
            if not arenas:
                checks.append(Check("memory", "tflm arena", FAIL, "--max-arena given but the export has no "
                                    "tflite-micro variant with a measured arena"))
            for variant, arena in arenas.items():
                checks.append(Check("memory", f"{variant} arena", PASS if arena <= cfg.max_arena else FAIL,
                                    f"TFLM arena {arena:,} bytes (budget {cfg.max_arena:,})",
                                    {"arena_bytes": arena, "budget": cfg.max_arena}))
    verdict = combine(c.status for c in checks if c.status in (PASS, FAIL, INCONCLUSIVE))
    count = lambda status: sum(c.status == status for c in checks)  # noqa: E731
    return schema.Gate.versioned({
        "verdict": verdict,
        "passed": verdict == PASS,
        "baseline": str(cfg.baseline), "exports": str(cfg.exports),
        "baseline_generation": old_manifest.get("generation"), "export_generation": new_manifest.get("generation"),
        "summary": {"checks": len(checks), "passed": count(PASS), "failed": count(FAIL),
                    "inconclusive": count(INCONCLUSIVE), "info": count(INFO), "incomplete": count(INCOMPLETE)},
        "checks": [asdict(c) for c in checks],
        "settings": {"accuracy_margin_points": cfg.accuracy_margin_points, "latency_margin": cfg.latency_margin,
                     "ship": list(cfg.ship) or "the int8 variants in both exports",
                     "latency_batch_sizes": list(cfg.latency_batch_sizes),
                     "latency_threads": list(cfg.latency_threads), "latency_rounds": cfg.latency_rounds,
                     "latency_block_seconds": cfg.latency_block_seconds, "max_bytes": cfg.max_bytes,
                     "max_arena": cfg.max_arena, "npu_budgets": cfg.npu_budgets, "strict": cfg.strict},
        "statistics": {
            "rule": "each check is pass, fail or inconclusive on its interval (toolkit/verdicts.py); the gate fails "
                    "when a check fails; inconclusive exits 0 unless --strict",
            "accuracy": "Newcombe (1998) paired score interval on per-image correctness, old vs new; the same file "
                        "(equal sha256) passes without sampling",
            "latency": "baseline and new file re-measured in the same run, in turns (ABAB) within each of "
                       "--latency-rounds fresh processes, order reversed every other round; Student's t interval "
                       "of the rounds' mean log p50 ratio; stored bench.json rows are information only",
            "family_wise": f"each two-sided interval at 1 - {FAMILY_ALPHA:g}/m for m checks (Bonferroni); a check fails "
                           "only when its whole interval lies beyond the bound, so the chance of any false alarm is at "
                           f"most {FAMILY_ALPHA / 2:.1%} for the accuracy checks together and {FAMILY_ALPHA / 2:.1%} "
                           "for the latency checks together",
        },
        "provenance": provenance(),
    })


# ----------------------------------------------------------------------------- outputs
def _status_cell(status: str) -> str:
    return {FAIL: "**FAIL**", INCONCLUSIVE: "**INCONCLUSIVE**", INCOMPLETE: "**INCOMPLETE**"}.get(status, status)


def markdown(doc: dict) -> str:
    s = doc["summary"]
    lines = ["# Gate: new export against the baseline", "",
             f"New `{doc['exports']}` (generation {doc['export_generation']}) against baseline `{doc['baseline']}` "
             f"(generation {doc['baseline_generation']}): **{doc['verdict'].upper()}** "
             f"({s['passed']} passed, {s['failed']} failed, {s['inconclusive']} inconclusive, "
             f"{s['incomplete']} incomplete, {s['info']} information only; {s['checks']} checks).", "",
             "| check | what | status | detail |", "|---|---|---|---|"]
    order = {FAIL: 0, INCOMPLETE: 1, INCONCLUSIVE: 2, PASS: 3, INFO: 4}
    for c in sorted(doc["checks"], key=lambda c: order.get(c["status"], 5)):
        lines.append(f"| {c['kind']} | {c['name']} | {_status_cell(c['status'])} | {c['detail']} |")
    st = doc["statistics"]
    lines += ["", f"Rule: {st['rule']}. Accuracy: {st['accuracy']}. Latency: {st['latency']}. "
              f"Family-wise: {st['family_wise']}.", ""]
    return "\n".join(lines)


def junit_xml(doc: dict) -> str:
    """JUnit XML (the format CI systems read): one testcase per check; inconclusive and information-only
    checks are skipped with their detail (a failure under --strict), incomplete ones are errors."""
    import xml.etree.ElementTree as ET

    checks = doc["checks"]
    strict = doc.get("settings", {}).get("strict", False)
    failing = lambda c: c["status"] == FAIL or (strict and c["status"] == INCONCLUSIVE)  # noqa: E731
    suite = ET.Element("testsuite", name="toolkit gate", tests=str(len(checks)),
                       failures=str(sum(failing(c) for c in checks)),
                       skipped=str(sum(c["status"] in (INFO, INCONCLUSIVE) and not failing(c) for c in checks)),
                       errors=str(sum(c["status"] == INCOMPLETE for c in checks)))
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"toolkit.gate.{c['kind'].replace(' ', '_')}", name=c["name"])
        if failing(c):
            ET.SubElement(case, "failure", message=c["detail"]).text = c["detail"]
        elif c["status"] == INCOMPLETE:
            ET.SubElement(case, "error", message=c["detail"]).text = c["detail"]
        elif c["status"] in (INFO, INCONCLUSIVE):
            ET.SubElement(case, "skipped", message=f"{c['status']}: {c['detail']}")
        ET.SubElement(case, "system-out").text = c["detail"]
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_outputs(doc: dict, cfg: GateConfig) -> dict[str, Path]:
    json_path = Path(cfg.json_path) if cfg.json_path else cfg.exports.gate_path
    paths = {"json": json_path, "markdown": cfg.exports.markdown_beside(json_path)}
    artifacts.atomic_write_json(json_path, doc)
    artifacts.atomic_write_text(paths["markdown"], markdown(doc))
    if cfg.junit:
        paths["junit"] = Path(cfg.junit)
        artifacts.atomic_write_text(paths["junit"], junit_xml(doc))
    return paths


def print_verdict(doc: dict, stream=sys.stdout) -> None:
    for c in doc["checks"]:
        print(f"{c['status'].upper() if c['status'] != PASS else c['status']:<12} {c['kind']:<8} {c['name']}: "
              f"{c['detail']}", file=stream)
