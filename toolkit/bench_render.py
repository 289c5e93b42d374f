"""`toolkit bench`'s human-readable outputs: the CSV and Markdown tables of a bench document, and
the one-line summary of a failed row. Pure functions of the document ``run_bench`` returns."""

from __future__ import annotations

import csv
import io

from toolkit.provenance import cpu_description

CSV_FIELDS = ["variant", "runtime", "device", "providers", "batch_size", "threads", "runs", "min_ms", "p50_ms",
              "p90_ms", "p99_ms", "mean_ms", "std_ms", "max_ms", "throughput", "load_ms",
              "first_inference_ms", "peak_rss_mb", "rss_before_load_mb", "bytes", "sha256"]


def shown(row: dict) -> str:
    """A row's variant as tables show it: the reference's key stays ``keras`` in the JSON (gate baselines match
    on it), a model from another framework is shown under its framework's name."""
    if row["variant"] == "keras" and row.get("format", "keras") != "keras":
        return f"{row['format']} (ref)"
    return row["variant"]


def to_csv(doc: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in doc["results"]:
        writer.writerow({**row, "providers": "+".join(row["providers"])})
    return buf.getvalue()


def to_markdown(doc: dict) -> str:
    m = doc["provenance"]["machine"]
    gpus = ", ".join(f"{g['name']} (driver {g['driver']})" for g in m.get("gpus", [])) or "none"
    v = doc["provenance"]["versions"]
    lines = [
        "# Inference latency",
        "",
        f"Machine: {cpu_description(m)}, {m['cpu_count']} cores; GPU: {gpus}. "
        f"{', '.join(f'{k} {v[k]}' for k in ('tensorflow', 'onnxruntime', 'onnxruntime-gpu', 'ai-edge-litert') if k in v)}. "
        f"Commit {doc['provenance']['git_commit']}, {doc['provenance']['created']}.",
        "",
        f"Method: {doc['method']['measure']} after warm-up ({doc['method']['warmup']}); "
        f"{doc['method']['timer']}; throughput = {doc['method']['throughput']}.",
        "",
        f"Memory: {doc['method'].get('memory', 'not measured')}.",
        "",
        "| variant | runtime | device | providers | batch | threads | p50 ms | p90 ms | p99 ms | mean ms | "
        "std ms | img/s | runs | load ms | first ms | peak RSS MiB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        device = r["device"] + (" (fallback)" if r.get("fallback_reason") else "")
        lines.append(
            f"| {shown(r)} | {r['runtime']} | {device} | {'+'.join(r['providers'])} | {r['batch_size']} | "
            f"{r['threads']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['mean_ms']:.3f} | "
            f"{r['std_ms']:.3f} | {r['throughput']:,.0f} | {r['runs']} | {r['load_ms']:.1f} | "
            f"{r['first_inference_ms']:.2f} | {r.get('peak_rss_mb', float('nan')):.1f} |"
        )
    if doc.get("failed"):
        lines += ["", f"**Failed rows ({len(doc['failed'])})**: the runtime could not load or run the file; "
                  "every other row was measured.", ""]
        lines += [failed_line(f) for f in doc["failed"]]
    if doc["skipped"]:
        lines += ["", "Skipped:", ""]
        lines += [f"- {skipped_line(s)}" for s in doc["skipped"]]
    notes = {r["note"] for r in doc["results"] if r.get("note")}
    if notes:
        lines += ["", *[f"Note: {n}." for n in sorted(notes)]]
    fallbacks = {r["fallback_reason"] for r in doc["results"] if r.get("fallback_reason")}
    if fallbacks:
        lines += ["", "Rows marked (fallback) ran on the CPU although CUDA was asked for:", ""]
        lines += [f"- {reason}" for reason in sorted(fallbacks)]
    return "\n".join(lines) + "\n"


def failed_line(f: dict) -> str:
    """One failed row for a summary: where, at which settings, at which stage, and the runtime's reason."""
    return (f"- {f['variant']} on {f['runtime']} ({f['device']}, threads {f['threads']}, batch "
            f"{','.join(map(str, f['batch_sizes']))}, {f['stage']}): {f['reason']}")


def skipped_line(s: dict) -> str:
    """One skipped group (or its batch sizes a fixed-batch file cannot take) and why."""
    batches = f" at batch {','.join(map(str, s['batch_sizes']))}" if s.get("batch_sizes") else ""
    return f"{s['variant']} on {s['runtime']} ({s['device']}){batches}: {s['reason']}"
