"""Parity's outputs: parity.json (through toolkit/schema.py), parity.md, the disagreements figure and the
per-image predictions file the gate compares."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit import artifacts, datasets, schema
from toolkit.config import Gates, ParityConfig
from toolkit.parity.metrics import ParityReport
from toolkit.provenance import provenance
from toolkit.verdicts import PASS, Verdict, combine


def _hooks(runtime: str | None):
    from toolkit import runners

    known = runners.load_all()
    return known[runtime].parity if runtime in known else runners.ParityHooks()


def report_json(report: ParityReport, cfg: ParityConfig) -> dict:
    return schema.Parity.versioned({
        "reference": report.reference,
        "variants": {name: v.to_json() for name, v in report.variants.items()},
        "passed": report.verdict == PASS and not report.context.get("failed"),  # a check not made is not a pass
        "verdict": report.verdict,
        "class_names": report.class_names,
        **report.context,
        "gates": vars(cfg.gates),
        "export_generation": report.export_generation,
        "statistics": {
            "accuracy_ci95": "Wilson score interval",
            "agreement_ci95": "Wilson score interval",
            "accuracy_diff_ci95_points": "Newcombe (1998) hybrid score interval for paired proportions (method 10): "
                                         "valid, and not of zero width, when no image disagrees",
            "mcnemar_p": "exact two-sided McNemar test on discordant pairs",
        },
        "provenance": provenance(),
    })


def verdict_cell(verdict: str, gates: list[Verdict]) -> str:
    """A table cell: pass, or the failed / inconclusive gates with how many images would decide."""
    if verdict == PASS:
        return "pass"
    shown = [g for g in gates if g.status == verdict]
    return f"**{verdict.upper()}**: " + "; ".join(str(g) for g in shown)


def _gates_text(gates: Gates, scores: str) -> str:
    return (
        "Gates: float variants agree on >= "
        f"{gates.float_min_agreement}% of images and max abs {scores} diff <= {gates.float_max_logit_diff:g}; "
        f"fp16 and dynamic lose at most {gates.reduced_max_accuracy_loss} points; int8 variants lose at most "
        f"{gates.int8_max_accuracy_loss} points and agree on >= {gates.int8_min_agreement}%; TFLM agrees with "
        f"LiteRT on >= {gates.micro_min_agreement_with_litert}%. Each is a verdict on its 95% interval: pass when "
        "the interval lies within the bound, fail when it lies beyond it, inconclusive when it straddles it (the "
        "images cannot tell; the line says about how many would); the largest logit difference is measured on "
        "every image and decides on its value. Inconclusive exits 0, or 4 with `--strict`."
    )


def markdown(report: ParityReport, gates: Gates) -> str:
    ref = report.reference
    dataset = report.context.get("dataset", {})
    kind = datasets.article(dataset.get("kind"))
    scores = "probability" if ref.get("output") == "probabilities" else "logit"
    lines = [
        f"# Accuracy parity on {kind} test split",
        "",
        f"Reference: Keras model `{ref['path']}`"
        + (f" on {ref['runtime']} ({', '.join(ref.get('providers', []))})" if ref.get("runtime") else "")
        + f", accuracy **{ref['accuracy']:.2%}** "
        f"(95% CI {ref['accuracy_ci95'][0]:.2%} to {ref['accuracy_ci95'][1]:.2%}) on {ref['images']:,} images.",
    ]
    if dataset:
        lines += ["", f"Data: `{dataset['source']}` ({dataset['kind']}, {len(report.class_names)} classes, "
                  f"fingerprint `{dataset['fingerprint']['sha256'][:16]}...`). Preprocessing: "
                  f"{report.preprocessing.describe()}. The model outputs **{ref.get('output', 'logits')}** "
                  f"({ref.get('output_evidence', '')}); score differences below are in that space."]
    lines += [
        "",
        "| variant | size (bytes) | accuracy | 95% CI | diff (pts) | diff 95% CI (pts) | agreement | "
        f"disagreements | McNemar p | max abs {scores} diff | mean abs {scores} diff | gates |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, v in report.variants.items():
        m = v.metrics
        lo, hi = m["accuracy_ci95"]
        dlo, dhi = m["accuracy_diff_ci95_points"]
        verdict = verdict_cell(v.verdict, v.gates)
        if "informational" in m:
            would = [Verdict.from_json(g) for g in m["gates_if_enforced"]]
            status = combine(would)
            verdict = "not enforced (plain int8 before accuracy control): would " + (
                "pass" if status == PASS else f"be {status}: " + "; ".join(
                    f"{g.metric} = {g.value:.4g}" for g in would if g.status == status))
        lines.append(
            f"| {name} | {m['bytes']:,} | {m['accuracy']:.2%} | {lo:.2%} to {hi:.2%} | "
            f"{m['accuracy_diff_points']:+.2f} | {dlo:+.2f} to {dhi:+.2f} | {m['agreement']:.2%} | "
            f"{m['disagreements']} | {m['mcnemar_p']:.3g} | {m['max_abs_logit_diff']:.3g} | "
            f"{m['mean_abs_logit_diff']:.3g} | {verdict} |"
        )
    failed_rows = report.context.get("failed") or []
    if failed_rows:
        lines += ["", f"**Could not be checked ({len(failed_rows)})**: the runtime could not load or run the file "
                  "(not counted as passing; the command exits 7):", ""]
        lines += [f"- `{f['key']}` on {f['runtime']} ({f['stage']}): {f['reason']}" for f in failed_rows]
    skipped = report.context.get("skipped") or []
    if skipped:
        lines += ["", "Not checked (and not counted as passing):", ""]
        lines += [f"- `{s['variant']}` on {s['runtime']}: {s['reason']}" for s in skipped]
    for name, v in report.variants.items():  # what a runtime's parity hooks measured beside the gates (TFLM's twin)
        describe = _hooks(v.metrics.get("runtime")).describe
        text = describe(name, v.metrics, scores) if describe is not None else None
        if text:
            lines += ["", text]
    lines += control_markdown(report.context.get("accuracy_control", {}),
                              {name: v.metrics for name, v in report.variants.items()})
    names = report.class_names or [str(k) for k in range(len(ref["per_class_accuracy"]))]
    lines += [
        "",
        _gates_text(gates, scores),
        "",
        "## Per-class accuracy",
        "",
        "Reference accuracy per class, and each variant's difference from it (points, variant minus reference).",
        "",
        "| class | reference | " + " | ".join(report.variants) + " |",
        "|---|---:|" + "---:|" * len(report.variants),
    ]
    for k, name in enumerate(names):
        acc = ref["per_class_accuracy"][k]
        diffs = [v.metrics["per_class_accuracy_diff_points"][k] for v in report.variants.values()]
        cells = ["-" if d is None else f"{d:+.2f}" for d in diffs]
        lines.append(f"| {name} | {'-' if acc is None else f'{acc:.2%}'} | " + " | ".join(cells) + " |")
    lines += ["", "Confusion matrices (rows: true class, columns: predicted; classes in the order above) are in "
              "parity.json.", ""]
    return "\n".join(lines)


def control_markdown(records: dict, variants: dict[str, dict], heading: str = "##") -> list[str]:
    """Accuracy-controlled variants (``records``: their manifest records): the test-set figures
    beside the plain int8 ones (``variants``: parity metrics by name), and the search's steps
    (measured on the validation split at export)."""
    lines: list[str] = []
    for name, record in records.items():
        lines += ["", f"{heading} Accuracy-controlled `{name}`", "", record["outcome"] + "."]
        budget = record.get("budget", {})
        lines += ["", f"Budget: the upper 95% bound of the accuracy drop on the {record.get('validation', 'validation split')} "
                  f"<= {budget.get('max_accuracy_drop_points')} points, at most {budget.get('max_fallback_layers')} "
                  f"layer(s) changed, levels {', '.join(budget.get('allowed_levels', []))}"
                  + (f"; built with {record['tool']}" if record.get("tool") else "") + "."
                  + (" Full-integer: every layer is int8 or int16x8." if record.get("int8_only")
                     else " **Not full-integer**: some layers run in float (`int8_only: false`).")]
        rows = [(label, variants.get(key)) for label, key in (("plain int8", f"{name}:plain"),
                                                               ("accuracy-controlled", name))]
        if all(v is not None for _, v in rows):
            lines += ["", "Test set (the final figures; the search never saw it):", "",
                      "| model | bytes | accuracy | diff (pts) | diff 95% CI (pts) | agreement |", "|---|---:|---:|---:|---|---:|"]
            for label, m in rows:
                lines.append(f"| {label} | {m['bytes']:,} | {m['accuracy']:.2%} | {m['accuracy_diff_points']:+.2f} | "
                             f"{m['accuracy_diff_ci95_points'][0]:+.2f} to {m['accuracy_diff_ci95_points'][1]:+.2f} | "
                             f"{m['agreement']:.2%} |")
        steps = record.get("steps") or []
        if steps:
            lines += ["", "Search steps (validation split; latency: batch 1, one thread, p50 on this machine):", "",
                      "| step | change | accuracy | drop (pts) | drop upper 95% | bytes | +bytes | p50 ms | +p50 ms |",
                      "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
            plain = record["plain"]
            lines.append(f"| plain | the exporter's plain int8 | {plain['accuracy']:.2%} | {plain['drop_points']:+.2f} | "
                         f"{plain['drop_upper_points']:.2f} | {plain['bytes']:,} | | {plain['p50_ms_batch1']:.3f} | |")
            for st in steps:
                change = f"`{st['layer']}` ({st['op']}) {st['from']} -> {st['to']}" if "layer" in st else st.get("change", "")
                chosen = " **(kept)**" if st["step"] == record.get("chosen_step") else ""
                lines.append(f"| {st['step']}{chosen} | {change} | {st['accuracy']:.2%} | {st['drop_points']:+.2f} | "
                             f"{st['drop_upper_points']:.2f} | {st['bytes']:,} | {st.get('bytes_added', 0):+,} | "
                             f"{st['p50_ms_batch1']:.3f} | {st.get('p50_ms_added', 0.0):+.3f} |")
    return lines


def plot_disagreements(report: ParityReport, path: Path, per_variant: int = 12) -> None:
    """A grid of the test images on which each variant disagrees with the reference (read from the
    dataset again: only these images, never the whole test split)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for name, v in report.variants.items():
        idx = np.arange(len(report.labels)) if v.indices is None else v.indices
        wrong = idx[v.predictions != report.reference_predictions[idx]][:per_variant]
        by_image = dict(zip(idx.tolist(), v.predictions.tolist(), strict=True))
        rows.append((name, wrong, by_image))
    rows = [r for r in rows if len(r[1])]
    names = report.class_names or [str(k) for k in range(int(report.labels.max()) + 1)]

    def label(k) -> str:
        text = names[k] if k < len(names) else str(k)
        return text if len(text) <= 10 else text[:9] + "…"

    if not rows:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "No variant disagrees with the reference on any test image.",
                ha="center", va="center")
    else:
        shown = np.unique(np.concatenate([r[1] for r in rows]))
        pictures = dict(zip(shown.tolist(), report.preprocessing.read_raw(report.test, shown), strict=True))
        fig, axes = plt.subplots(len(rows), per_variant, figsize=(per_variant * 1.1, len(rows) * 1.5),
                                 squeeze=False)
        for r, (name, idx, by_image) in enumerate(rows):
            for col in range(per_variant):
                ax = axes[r][col]
                ax.axis("off")
                if col < len(idx):
                    i = int(idx[col])
                    img = pictures[i]
                    if img.shape[-1] == 1:
                        ax.imshow(img[..., 0], cmap="gray_r", vmin=0, vmax=255)
                    else:
                        ax.imshow(img)
                    ax.set_title(f"#{i} y={label(report.labels[i])}\nref={label(report.reference_predictions[i])} "
                                 f"var={label(by_image[i])}", fontsize=6)
            axes[r][0].text(-0.5, 0.5, name, transform=axes[r][0].transAxes, ha="right", va="center",
                            fontsize=8)
        fig.suptitle("Test images where a variant disagrees with the Keras reference", fontsize=9)
    artifacts.atomic_savefig(fig, path)


def predictions_path(json_path: Path) -> Path:
    """Where the per-image predictions of a parity JSON file are: beside it, ``*-predictions.npz``."""
    from toolkit.exportdir import ExportDir

    return ExportDir.predictions_beside(json_path)


def save_predictions(report: ParityReport, path: Path) -> None:
    """Every image's label and prediction (reference and each variant; a sampled variant with its
    indices), so that `toolkit gate` can compare two exports image by image."""
    import io

    arrays = {"labels": report.labels.astype(np.int32), "reference": report.reference_predictions.astype(np.int32)}
    for name, v in report.variants.items():
        arrays[f"variant:{name}"] = v.predictions.astype(np.int32)
        if v.indices is not None:
            arrays[f"indices:{name}"] = v.indices.astype(np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    artifacts.atomic_write_bytes(path, buf.getvalue())


def write_outputs(report: ParityReport, cfg: ParityConfig) -> dict:
    """parity.json (or --json PATH), its per-image predictions, parity.md and the disagreement PNG."""
    exports = cfg.exports
    doc = report_json(report, cfg)
    json_path = Path(cfg.json_path) if cfg.json_path else exports.parity_path
    doc["predictions_file"] = predictions_path(json_path).name
    save_predictions(report, predictions_path(json_path))
    artifacts.atomic_write_json(json_path, doc)
    artifacts.atomic_write_text(exports.parity_md_path, markdown(report, cfg.gates))
    plot_disagreements(report, exports.parity_png_path)
    return {"json": json_path, "predictions": predictions_path(json_path), "markdown": exports.parity_md_path,
            "png": exports.parity_png_path}


def _shown_verdict(v) -> str:
    """A variant's verdict in the printed table; the plain int8 that accuracy control replaced is not gated, so
    it says what its gates would have said rather than a pass it was never given."""
    if "informational" in v.metrics:
        return f"not enforced (would {combine([Verdict.from_json(g) for g in v.metrics['gates_if_enforced']])})"
    return v.verdict if v.verdict != "inconclusive" else "INCONCLUSIVE"


def table_lines(report: ParityReport) -> list[str]:
    """The parity table the commands print (`toolkit parity`, `toolkit run`): the Keras reference, then each
    variant's deployable size, accuracy, difference with its 95% interval, agreement, disagreements, McNemar's
    p and verdict (TFLM's sample size where it ran on fewer images)."""
    w = max(15, *(len(name) for name in report.variants))
    ref = report.reference
    lines = [f"{'variant':<{w}} {'bytes':>10} {'accuracy':>9} {'diff pts':>9} {'95% CI (pts)':>17} {'agreement':>10} "
             f"{'disagree':>8} {'McNemar p':>9}  gates",
             f"{ref.get('framework', 'keras') + ' (ref)':<{w}} {'':>10} {ref['accuracy']:>9.2%}"]
    for name, v in report.variants.items():
        m = v.metrics
        lo, hi = m["accuracy_diff_ci95_points"]
        size = schema.model_bytes(m)
        size = f"{size:,}" if size is not None else ""
        lines.append(f"{name:<{w}} {size:>10} {m['accuracy']:>9.2%} "
                     f"{m['accuracy_diff_points']:>+9.2f} {f'{lo:+.2f} to {hi:+.2f}':>17} {m['agreement']:>10.2%} "
                     f"{m['disagreements']:>8} {m['mcnemar_p']:>9.3g}  {_shown_verdict(v)}"
                     + (f"  (TFLM, {m['images']:,} images)" if m.get("images") != len(report.labels) else ""))
    return lines
