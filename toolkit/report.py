"""One Markdown report from the files the pipeline wrote: train.json, manifest.json,
parity.json and bench.json. Every number in it is read from those files."""

from __future__ import annotations

from pathlib import Path

from toolkit import artifacts, exporters, schema
from toolkit.exportdir import ExportDir
from toolkit.provenance import cpu_description, provenance


def _winner(ranked: list[dict], figure, second_run_agrees: bool | None = None) -> str:
    """The fastest row of one run, or the tie of every row whose p50 interval overlaps the fastest
    one's. Within-run intervals say nothing about the next run on a shared machine, so a row is
    called the winner only when a second run also ranks it first (``second_run_agrees``); from one
    run it is "the fastest in this run"."""
    from toolkit.timing import tied

    best = ranked[0]
    if "p50_ci95_ms" not in best:  # results from before intervals were recorded
        return f"`{best['variant']}` on {best['runtime']}, {figure(best)} (fastest in this run)"
    if not best["p50_ci95_ms"]:  # too few samples for any interval to reach 95% (toolkit/timing.py)
        return (f"`{best['variant']}` on {best['runtime']}, {figure(best)} (fastest in this run; too few samples "
                "for a 95% p50 interval, so no ranking is claimed: more --min-runs give one)")
    leaders = [r for r in ranked if r is best or tied(best, r)]
    if len(leaders) == 1:
        lo, hi = best["p50_ci95_ms"]
        text = (f"`{best['variant']}` on {best['runtime']}, {figure(best)} (p50 95% CI {lo:.3f} to {hi:.3f} ms, "
                "apart from the next in this run")
        if second_run_agrees:
            return text + "; a second run ranks it first too: the winner)"
        if second_run_agrees is False:
            return text + "; a second run ranks another first: no winner)"
        return text + "; one run: a second run may rank them differently)"
    names = ", ".join(f"`{r['variant']}` on {r['runtime']} ({figure(r)})" for r in leaders)
    return f"a tie between {names}: their p50 95% intervals overlap, so a second run could swap them"


def _fastest_in(rows: list[dict], batch: int, threads: int, passed: set) -> tuple | None:
    mine = [r for r in rows if r["batch_size"] == batch and r["threads"] == threads and r["variant"] in passed]
    best = min(mine, key=lambda r: r["p50_ms"], default=None)
    return (best["variant"], best["runtime"]) if best else None


def recommendations(manifest: dict, parity: dict, bench: dict, second: dict | None = None) -> list[str]:
    """Which variant to ship for which need, derived from the measurements. A fastest row is called
    the winner only when a ``second`` bench run (same settings) ranks it first too."""
    passed = {name for name, v in parity["variants"].items() if v["passed"]}
    rows = [r for r in bench.get("results", []) if r["variant"] in passed]
    undecided = sorted(n for n, v in parity["variants"].items() if _verdict(v) == "inconclusive")
    if not rows:
        return ["No variant passed its parity gates: ship nothing until `toolkit parity` passes."
                + (f" Inconclusive on these test images: {', '.join(f'`{n}`' for n in undecided)}." if undecided
                   else "")]
    threads = max(r["threads"] for r in rows)
    big = max(r["batch_size"] for r in rows)
    b1 = sorted((r for r in rows if r["batch_size"] == 1 and r["threads"] == threads), key=lambda r: r["p50_ms"])
    bb = sorted((r for r in rows if r["batch_size"] == big and r["threads"] == threads), key=lambda r: r["p50_ms"])
    sizes = {e["variant"]: schema.model_bytes(e) for e in manifest["artifacts"] if e["variant"] in passed}
    smallest = min(sizes, key=sizes.get)
    out = []
    def agrees(ranked: list[dict], batch: int) -> bool | None:
        if second is None:
            return None
        return _fastest_in(second.get("results", []), batch, threads, passed) == (ranked[0]["variant"],
                                                                                   ranked[0]["runtime"])

    if b1:
        out.append(f"**Lowest latency (batch 1, {threads} thread(s))**: "
                   + _winner(b1, lambda r: f"{r['p50_ms']:.3f} ms p50", agrees(b1, 1)) + ".")
    if bb and big != 1:
        out.append(f"**Highest throughput (batch {big})**: "
                   + _winner(bb, lambda r: f"{r['throughput']:,.0f} images/s", agrees(bb, big)) + ".")
    ties = sorted(n for n in sizes if sizes[n] == sizes[smallest])
    out.append(f"**Smallest model**: {', '.join(f'`{n}`' for n in ties)}, {sizes[smallest]:,} bytes.")
    for name in [n for n in exporters.variants_with("integer-only") if n in passed][:1]:
        v = parity["variants"][name]
        lo, hi = v["accuracy_diff_ci95_points"]
        out.append(f"**Integer-only hardware (microcontrollers, NPUs, Edge TPU)**: `{name}`, int8 in and out; "
                   f"accuracy {v['accuracy']:.2%} ({v['accuracy_diff_points']:+.2f} points, 95% CI {lo:+.2f} to "
                   f"{hi:+.2f}).")
    floats = [n for n in exporters.variants_with("closest-float") if n in passed]
    if floats:
        worst = max(parity["variants"][n]["max_abs_logit_diff"] for n in floats)
        out.append(f"**Closest to the trained model**: {', '.join(f'`{n}`' for n in floats)} (max abs logit "
                   f"difference {worst:.2g}).")
    if undecided:
        out.append(f"**Not proven on these test images**: {', '.join(f'`{n}`' for n in undecided)} (an inconclusive "
                   "gate: the images cannot tell whether its bound holds; parity.md says about how many would).")
    failed = sorted(n for n, v in parity["variants"].items() if _verdict(v) == "fail")
    if failed:
        out.append(f"**Do not ship**: {', '.join(f'`{n}`' for n in failed)} (failed parity gates).")
    return out


def shipping_table(manifest: dict, parity: dict) -> list[str]:
    """Each variant's file under the stable ``DIR/current`` path, with what an app must know to feed it:
    input and output dtype, shape, and the int8 scale and zero point (real = scale * (q - zero_point))."""
    from toolkit.artifacts import CURRENT

    def tensor(spec: dict) -> str:
        shape = "x".join("N" if d is None else str(d) for d in spec.get("shape", []))
        quant = f", scale {spec['scale']:.6g}, zero point {spec['zero_point']}" if spec.get("scale") is not None else ""
        return f"{spec.get('dtype', '?')} {shape}{quant}"

    rows = ["### The files", "",
            f"Under `{CURRENT}/` (a link to the live generation, the same path after every export); the class names, "
            "in output order, are in `" + (f"{CURRENT}/{Path(manifest['labels']['path']).name}" if manifest.get("labels")
                                           else "the manifest") + "`.", "",
            "| variant | file | bytes | parity | input | output |", "|---|---|---:|---|---|---|"]
    for e in manifest["artifacts"]:
        v = parity["variants"].get(e["variant"])
        verdict = _verdict(v) if v else "not checked"
        name = Path(e["path"]).name
        rows.append(f"| {e['variant']} | `{CURRENT}/{name}` | {schema.model_bytes(e):,} | {verdict} | "
                    f"{tensor(e['inputs'][0]) if e.get('inputs') else '-'} | "
                    f"{tensor(e['outputs'][0]) if e.get('outputs') else '-'} |")
    return rows + [""]


def _verdict(v: dict) -> str:
    """A parity.json variant's verdict (files from before verdicts: passed or failed)."""
    return v.get("verdict") or ("pass" if v["passed"] else "fail")


def _provenance_lines(bench_path: Path) -> list[str]:
    """The line saying when, by which toolkit and commit, and on which machine the report was made,
    and which files its numbers are read from."""
    prov = provenance()
    return [f"Generated {prov['created']} by toolkit {prov['versions']['toolkit']} (commit "
            f"`{prov['git_commit']}`) on {cpu_description(prov['machine'])} ({prov['machine']['cpu_count']} cores). "
            "Every number below is read from `train.json`, `manifest.json`, `parity.json` and "
            f"`{Path(bench_path).name}` in this directory.", ""]


def _training_lines(train: dict) -> list[str]:
    """## Training: the architecture, its hyperparameters and accuracies, and one table line per epoch."""
    h = train["hyperparameters"]
    return [
        "## Training", "",
        f"`{train['model'].get('architecture', 'cnn')}`: {train['model'].get('description', 'the seed CNN')}; "
        f"{train['model']['parameters']:,} parameters, trained on {train['data']['train_images']:,} "
        f"images for {h['epochs']} epoch(s) (batch {h['batch_size']}, Adam lr {h['learning_rate']:g}, "
        f"seed {h['seed']}) in {train['train_seconds']:.1f} s. Validation accuracy "
        f"{train['validation_accuracy']:.2%}, **test accuracy {train['test_accuracy']:.2%}**. "
        f"Weights sha256 `{train['model']['weights_sha256'][:16]}...`.", "",
        "| epoch | loss | accuracy | val_loss | val_accuracy |", "|---:|---:|---:|---:|---:|",
        *[f"| {e['epoch']} | {e['loss']:.4f} | {e['accuracy']:.2%} | {e['val_loss']:.4f} | "
          f"{e['val_accuracy']:.2%} |" for e in train["epochs"]],
        "",
    ]


def _model_and_data_lines(manifest: dict) -> list[str]:
    """## Model and data: the model, the dataset and the preprocessing as the manifest records them
    (nothing when it records none of them)."""
    model, dataset, prep = manifest.get("model"), manifest.get("dataset"), manifest.get("preprocessing")
    if not (model and dataset and prep):
        return []
    return [
        "## Model and data", "",
        f"- Model: `{manifest['source_model']['path']}` ({model['parameters']:,} parameters), input "
        f"{tuple(model['input_shape'])} ({model['layout']}), {model['classes']} classes; it outputs "
        f"**{model['output']}** ({model['output_evidence']})"
        + (f"; it rescales raw pixels itself ({model['rescaling']})" if model.get("rescaling") else "") + ".",
        f"- Data: {dataset['kind']} `{dataset['source']}`: {dataset['splits']['train']:,} training, "
        f"{dataset['splits']['validation']:,} validation and {dataset['splits']['test']:,} test images, "
        f"{len(dataset['class_names'])} classes ({', '.join(dataset['class_names'][:12])}"
        f"{', ...' if len(dataset['class_names']) > 12 else ''}); {dataset['splits']['rule']}. Fingerprint: "
        f"{dataset['fingerprint']['method']}, `{dataset['fingerprint']['sha256'][:16]}...`.",
        f"- Preprocessing, the same for every runtime: {prep['description']}.",
        *_int8_choice_lines(manifest),
        "",
    ]


def _int8_choice_lines(manifest: dict) -> list[str]:
    """Where the int8 choices were judged, and the fine-tuning the int8 variants were made from."""
    lines = []
    val = manifest.get("validation")
    if val:
        lines.append(f"- The int8 choices (range estimator, accuracy search, learned rounding, fine-tuning) were judged "
                     f"on {val['images']:,} validation images" + (f": **{val['note']}**." if val.get("note") else
                                                             ", named apart from the training images."))
    lines += _rounding_lines(manifest.get("learned_rounding") or {})
    tuned = manifest.get("fine_tuning") or {}
    records = [(None, tuned)] if "epochs" in tuned else list(tuned.items())  # an older manifest: one record (8-bit)
    return lines + [_tuning_line(grid, r) for grid, r in records]


def _tuning_line(grid: str | None, tuned: dict) -> str:
    """What fine-tuning through one weight grid did: which epoch was kept, what validation said, which weights the
    int8 variants on that grid are made from."""
    trained = [e for e in tuned.get("epochs", []) if e["epoch"] > 0]
    kept = tuned.get("kept_epoch")
    where = f" through the int8 grid {grid}" if grid else ""
    if kept == 0:
        return (f"- Fine-tuning{where} ({len(trained)} epoch(s), {tuned['total_seconds']:.0f} s) did not make the "
                "simulated int8 model agree better with the model on the validation images: the int8 variants on that "
                "grid are made from the model's own weights.")
    agree = {e["epoch"]: e.get("validation_agreement") for e in tuned.get("epochs", [])}
    gain = (f"; simulated int8 agreement on validation {100 * agree[0]:.2f}% -> {100 * agree[kept]:.2f}%"
            if kept is not None and agree.get(0) is not None else "")
    return (f"- Fine-tuned toward the model{where} (quantization-aware, epoch {kept if kept is not None else len(trained)}"
            f" of {len(trained)} kept, on {tuned['images']:,} training images, {tuned['total_seconds']:.0f} s{gain}): "
            f"made from it: {tuned.get('variants', 'the int8 variants on this grid')}; parity judges them against the "
            "model itself.")


def _rounding_lines(grids: dict) -> list[str]:
    """One line per weight grid learned rounding ran on: what the validation images said, which weights were used."""
    lines = []
    for grid, r in grids.items():
        judged = r.get("judged")
        figures = (f": simulated int8 agreement on {judged['validation_images']:,} validation images "
                   f"{100 * judged['own_agreement']:.2f}% with the model's own weights, "
                   f"{100 * judged['learned_agreement']:.2f}% with the learned rounding" if judged else "")
        if r.get("skipped"):
            lines.append(f"- Learned weight rounding onto the int8 grid {grid}: {r['skipped']} "
                         f"({r['total_seconds']:.0f} s); the int8 variants are made from the model's own weights.")
            continue
        used = (f"made from it: {r.get('variants', 'the int8 variants on this grid')}" if "model" in r else
                "the int8 variants are made from the model's own weights (not better beyond noise)")
        lines.append(f"- Learned weight rounding onto the int8 grid {grid} ({r['total_seconds']:.0f} s){figures}; "
                     f"{used}.")
    return lines


def _parity_cells(entry: dict, parity: dict) -> list[str] | None:
    """A variant's parity cells of the variants table (name, size, accuracy, difference and its
    interval, agreement, gates); the reference's for ``keras``; None for a variant not checked."""
    ref = parity["reference"]
    name = entry["variant"]
    if name == "keras":
        return [f"{ref.get('framework', 'keras')} (reference)", "-", f"{ref['accuracy']:.2%}", "-", "-", "-", "-"]
    if name not in parity["variants"]:
        return None
    v = parity["variants"][name]
    lo, hi = v["accuracy_diff_ci95_points"]
    sample = f" ({v['images']:,} images)" if v.get("images") != ref["images"] else ""
    return [name, f"{schema.model_bytes(entry):,}", f"{v['accuracy']:.2%}{sample}",
            f"{v['accuracy_diff_points']:+.2f}", f"{lo:+.2f} to {hi:+.2f}", f"{v['agreement']:.2%}",
            {"pass": "pass", "fail": "**FAIL**"}.get(_verdict(v), "**INCONCLUSIVE**")]


def _timed_lines(cells: list[str], name: str, rows: list[dict], *, threads: int, big: int | None) -> list[str]:
    """The variants table's lines for variant ``name``: ``cells`` then one line per runtime it was timed
    on (or one with "-"), at the most threads that runtime ran with: p50 at batch 1 and at ``big``,
    throughput at ``big``, peak memory."""
    lines = []
    # one line per runtime the variant was timed on, at the most threads that runtime ran with
    # (a runtime with fixed settings, like TFLM's batch 1 and one thread, shows what it has)
    timed = sorted({r["runtime"] for r in rows if r["variant"] == name}) or ["-"]
    for rt in timed:
        mine = [r for r in rows if r["variant"] == name and r["runtime"] == rt]
        t = max((r["threads"] for r in mine), default=threads)
        b1 = [r for r in mine if r["batch_size"] == 1 and r["threads"] == t]
        line = [*cells, rt, f"{b1[0]['p50_ms']:.3f}" if b1 else "-"]
        bb = [r for r in mine if r["batch_size"] == big and r["threads"] == t]
        if big and big != 1:
            line += [f"{bb[0]['p50_ms']:.3f}", f"{bb[0]['throughput']:,.0f}"] if bb else ["-", "-"]
        peak = max((r["peak_rss_mb"] for r in mine if r["threads"] == t and "peak_rss_mb" in r), default=None)
        line.append(f"{peak:.0f}" if peak is not None else "-")
        lines.append("| " + " | ".join(line) + " |")
    return lines


def _variants_lines(manifest: dict, parity: dict, rows: list[dict]) -> list[str]:
    """## Variants: the reference accuracy, the table of every checked variant's parity and latencies
    (from the bench ``rows``), and what the latencies and sizes mean."""
    threads = max((r["threads"] for r in rows), default=1)
    batches = sorted({r["batch_size"] for r in rows})
    big = batches[-1] if batches else None
    ref = parity["reference"]
    lines = ["## Variants", "",
             f"Reference ({ref.get('framework', 'keras')} model) accuracy on {ref['images']:,} test images: "
             f"**{ref['accuracy']:.2%}**.", ""]
    head = ["variant", "size (bytes)", "accuracy", "diff (pts)", "95% CI (pts)", "agreement", "gates", "runtime",
            "p50 ms batch 1"]
    if big and big != 1:
        head += [f"p50 ms batch {big}", f"img/s batch {big}"]
    head.append("peak RSS MiB")
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * 6 + "---|" + "---:|" * (len(head) - 8)]
    for e in [{"variant": "keras"}, *manifest["artifacts"]]:
        cells = _parity_cells(e, parity)
        if cells is not None:
            lines += _timed_lines(cells, e["variant"], rows, threads=threads, big=big)
    fixed = sorted({r["runtime"] for r in rows if r["threads"] != threads})
    lines += ["", f"Latencies: {threads} thread(s)" + (f" ({', '.join(fixed)}: its fixed setting)" if fixed else "")
              + f", device {', '.join(sorted({r['device'] for r in rows})) or '-'}; peak RSS: the benchmark "
              "process's peak resident memory (Python and the runtime included) at the largest batch; sizes are "
              "model bytes (for tflite-micro the embedded array, not the C source; for OpenVINO .xml + .bin); full "
              "table in the bench Markdown beside this report.", ""]
    return lines


def _not_exported_lines(manifest: dict) -> list[str]:
    """### Not exported: each variant the export could not make, at which stage and why (nothing when
    every variant was made)."""
    if not manifest.get("failed"):
        return []
    lines = ["### Not exported", "", "These variants could not be made for this model; the others were committed "
             "and checked:", ""]
    for f in manifest["failed"]:
        ops = f" (unsupported ops: {', '.join(f['unsupported_ops'])})" if f.get("unsupported_ops") else ""
        lines.append(f"- `{f['variant']}` ({f['stage']}): {f['reason']}{ops}")
    lines.append("")
    return lines


def _failed_rows_lines(parity: dict, bench: dict) -> list[str]:
    """### Rows that failed: the parity and bench rows a runtime could not load or run (nothing when
    there is none)."""
    not_checked, not_timed = parity.get("failed") or [], bench.get("failed") or []
    if not (not_checked or not_timed):
        return []
    from toolkit.bench import failed_line

    lines = ["### Rows that failed", "", "A runtime could not load or run these files; every other row was "
             "checked and measured (the commands exited 7):", ""]
    lines += [f"- parity: `{f['key']}` on {f['runtime']} ({f['stage']}): {f['reason']}" for f in not_checked]
    lines += ["- bench: " + failed_line(f)[2:] for f in not_timed]
    lines.append("")
    return lines


def _gate_lines(parity: dict) -> list[str]:
    """### Failed gates and ### Inconclusive gates: each such gate of a (not informational) variant."""
    from toolkit.verdicts import Verdict

    lines = []
    for status, title in (("fail", "Failed gates"), ("inconclusive", "Inconclusive gates (the test images cannot "
                                                                    "tell; exit 0 unless --strict)")):
        shown = [(n, Verdict.from_json(g)) for n, v in parity["variants"].items() if "informational" not in v
                 for g in v["gates"]]
        shown = [(n, g) for n, g in shown if g.status == status]
        if shown:
            lines += [f"### {title}", ""] + [f"- `{n}`: {g}" for n, g in shown] + [""]
    return lines


def _footprint_lines(exports: ExportDir) -> list[str]:
    """## Microcontroller footprint, from footprint.json when the export has one."""
    footprint = exports.footprint(required=False)
    if footprint is None:
        return []
    from toolkit.footprint import markdown as footprint_markdown

    fp = footprint_markdown(footprint).splitlines()
    return ["## Microcontroller footprint", "", *fp[2:]]


def _runtime_note_lines(rows: list[dict]) -> list[str]:
    """One line per runtime whose bench rows carry a note: its first row's p50 and the note."""
    lines = []
    for runtime in sorted({r["runtime"] for r in rows if r.get("note")}):
        first = next(r for r in rows if r["runtime"] == runtime)
        lines += ["", f"{runtime} on this host: {first['p50_ms']:.3f} ms p50 per call ({first['note']}).", ""]
    return lines


def _plot_lines(exports: ExportDir, bench_path: Path) -> list[str]:
    """## Plots: each plot image found beside the bench JSON or in the export directory."""
    beside = exports.bench_outputs(bench_path)
    plots = [("Latency vs batch size (p50 with the p10-p90 band; per call and per image)", beside["latency_png"]),
             ("Accuracy vs latency and size (95% intervals; Pareto front ringed)", beside["tradeoff_png"]),
             ("Peak memory", beside["memory_png"]),
             ("Where variants disagree with the reference", exports.parity_png_path)]
    lines = ["## Plots", ""]
    for title, path in plots:
        if (Path(bench_path).parent / path.name).is_file() or exports.named(path.name).is_file():
            lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    return lines


def build_report(exports: ExportDir | Path, bench_json: Path | None = None) -> str:
    """The Markdown report of the export in ``exports``: training, model and data, the variants' parity
    and latencies, failures, gates, which variant to ship, footprint and plots; every number read from
    train.json, manifest.json, parity.json and the bench JSON (``bench_json`` or DIR/bench.json)."""
    exports = ExportDir.of(exports)
    with exports.reading() as manifest:  # hold this generation while reading it
        parity = exports.parity()
        bench_path = Path(bench_json or exports.bench_path)
        bench = exports.bench(bench_path, required=False) or {"results": []}
        train = exports.train_record()

        rows = bench.get("results", [])
        lines = ["# toolkit report", ""]
        lines += _provenance_lines(bench_path)
        if train:
            lines += _training_lines(train)
        lines += _model_and_data_lines(manifest)
        lines += _variants_lines(manifest, parity, rows)
        lines += _not_exported_lines(manifest)
        lines += _failed_rows_lines(parity, bench)
        if parity.get("accuracy_control"):
            from toolkit.parity import control_markdown

            lines += control_markdown(parity["accuracy_control"], parity["variants"], heading="###") + [""]
        lines += _gate_lines(parity)
        lines += ["## Which variant to ship", "", *[f"- {r}" for r in recommendations(manifest, parity, bench)], ""]
        lines += shipping_table(manifest, parity)
        lines += _footprint_lines(exports)
        lines += _runtime_note_lines(rows)
        lines += _plot_lines(exports, bench_path)
        return "\n".join(lines)


def write_report(exports: ExportDir | Path, bench_json: Path | None = None) -> Path:
    path = ExportDir.of(exports).report_path
    artifacts.atomic_write_text(path, build_report(exports, bench_json))
    return path
