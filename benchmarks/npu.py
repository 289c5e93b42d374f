"""The models of benchmarks/PTQ.md on Arm Ethos-U NPUs: what Arm's Vela compiler places on the NPU and the CPU,
the SRAM and flash it needs and its estimated time per inference, beside TFLM's arena and the host latency
(issue #37).

    python benchmarks/npu.py [--work /tmp/toolkit-ptq] [--models seed-cnn mobilenetv2 ...] [--from-json]

For each model, the toolkit's default int8 export that `python benchmarks/ptq.py` made (``WORK/MODEL/default``,
its `tflite-int8` checked by parity there) is copied and `toolkit footprint --npu` runs on the copy: the
representative configurations (ethos-u55-128, ethos-u65-256, ethos-u85-256, each with Vela's system and
memory configuration stated) and TFLM's arena of the same bytes. The host latency is PTQ.md's: LiteRT's
batch-1 p50 of the same file on the machine of results/ptq.json. Vela's figures are estimates of its
performance model and cover the NPU's operators only; nothing here runs on an NPU.

Writes results/npu.json and NPU.md (every number from the JSON).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from _common import BENCHMARKS, RESULTS, parser, run_toolkit

from toolkit import schema
from toolkit.artifacts import atomic_write_json, atomic_write_text, read_json
from toolkit.provenance import provenance

MODELS = ("seed-cnn", "standardized-mlp", "efficientnetb0", "mobilenetv2", "mobilenetv3small", "resnet50",
          "efficientnetb0-small", "mobilenetv2-small")


def measure(model: str, work: Path) -> dict:
    """`toolkit footprint --npu` on a copy of the model's default PTQ export: its footprint.json rows."""
    source = work / model / "default"
    if not (source / schema.MANIFEST).is_file():
        return {"error": f"no export at {source}: run `python benchmarks/ptq.py --models {model}` first"}
    copy = work / "npu" / model
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy, symlinks=True)
    proc = run_toolkit("footprint", "--exports", copy, "--npu", "--quiet", capture=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["(no message)"])[-1][:400]}
    footprint = schema.Footprint.read(copy)
    tflm = next((r for r in footprint["variants"] if r["variant"] == "tflite-int8"), {})
    return {"tflite_int8_bytes": schema.model_bytes(tflm) if tflm else None, "tflm_arena_bytes": tflm.get("arena_bytes"),
            "npu": [{k: v for k, v in row.items() if k not in ("layers", "folded_warnings")}
                    for row in footprint["npu"]["rows"] if row["variant"] == "tflite-int8"],
            "targets": footprint["npu"]["targets"]}


def host_latency(ptq: dict, model: str) -> dict | None:
    row = ptq.get("models", {}).get(model, {}).get("rows", {}).get("tflite-int8")
    if not row or "p50_ms_batch1" not in row:
        return None
    machine = ptq["models"][model].get("provenance", {}).get("machine", {})
    return {"p50_ms": row["p50_ms_batch1"], "p50_ci95_ms": row.get("p50_ci95_ms_batch1"), "runtime": row["runtime"],
            "cpu": machine.get("cpu"), "parity_verdict": row.get("parity_verdict")}


def markdown(doc: dict) -> str:
    lines = ["# Arm Ethos-U NPUs: the models of PTQ.md", "",
             "Written by `python benchmarks/npu.py` from `results/npu.json` (each model's rows by its own run, "
             "whose command the JSON keeps; the last: `" + doc["command"] + "`). For each model, the toolkit's default "
             "`tflite-int8` (PTQ.md's run, checked there by `toolkit parity`) compiled by Arm's Vela "
             f"{doc['vela']} for three representative configurations with `toolkit footprint --npu`. **Vela's "
             "figures are estimates of its performance model, not measurements, and its time covers the operators "
             "on the NPU only**; the host p50 is LiteRT at batch 1 on the CPU of PTQ.md's run; the TFLM arena is "
             "what TFLM's recording allocator measured on the same bytes.", "",
             "| model | configuration | operators on the NPU | on the CPU | SRAM KiB | flash KiB | DRAM KiB | "
             "Vela est. ms (NPU part) | TFLM arena KiB | host p50 ms (LiteRT) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    reasons = []
    for model, m in doc["models"].items():
        if "error" in m:
            lines.append(f"| {model} | not measured: {m['error']} |  |  |  |  |  |  |  |  |")
            continue
        host = m.get("host")
        host_cell = (f"{host['p50_ms']:.3f} (95% CI {host['p50_ci95_ms'][0]:.3f} to {host['p50_ci95_ms'][1]:.3f})"
                     if host and host.get("p50_ci95_ms") else "not in ptq.json")
        arena = f"{m['tflm_arena_bytes'] / 1024:,.1f}" if m.get("tflm_arena_bytes") else "-"
        for r in m["npu"]:
            ops = r["operators"]
            flash = r["off_chip_flash_kib"] + r["on_chip_flash_kib"]
            lines.append(f"| {model} | {r['target']} | {ops['npu']} of {ops['total']} | {ops['cpu']} | "
                         f"{r['sram_kib']:,.1f} | {flash:,.1f} | {r['dram_kib']:,.1f} | {r['inference_ms']:.3f} | "
                         f"{arena} | {host_cell} |")
            reasons += [f"- {model} on {r['target']}: {f['operator']} ({f['output']}): {f['reason']}"
                        for f in r["cpu_fallbacks"]]
    lines += ["", "Operators Vela leaves on the CPU, with its reason:" if reasons else
              "Vela places every operator of every model on the NPU in every configuration.", ""]
    lines += reasons + ([""] if reasons else [])
    missing = [m for m in MODELS if m not in doc["models"]]
    if missing:
        lines += [f"Not measured yet: {', '.join(missing)} (their PTQ.md exports were not made in the run this "
                  "page reads).", ""]
    targets = next((m["targets"] for m in doc["models"].values() if "targets" in m), [])
    lines += ["Configurations (Vela's Arm/vela.ini): " + "; ".join(
        f"{t['name']}: {t['description']} (`--system-config {t['system_config']} --memory-mode {t['memory_mode']}`)"
        for t in targets) + ".", "",
        f"Machine of the host latencies: {doc['host_cpu'] or 'see results/ptq.json'}. Vela ran on "
        f"{doc['provenance']['machine'].get('cpu')} (its estimates do not depend on the machine).", ""]
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--work", type=Path, default=Path("/tmp/toolkit-ptq"))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--from-json", action="store_true", help="only rewrite NPU.md from results/npu.json")
    args = p.parse_args()
    out = args.out / "npu.json"
    if args.from_json:
        atomic_write_text(BENCHMARKS / "NPU.md", markdown(read_json(out)))
        return
    from toolkit.targets.ethosu import vela_version

    ptq = read_json(args.out / "ptq.json") if (args.out / "ptq.json").is_file() else {}
    doc = read_json(out) if out.is_file() else {"models": {}}
    for model in args.models:
        print(f"{model}: toolkit footprint --npu", file=sys.stderr, flush=True)
        m = measure(model, args.work)
        m["host"] = host_latency(ptq, model)
        m["command"] = "python benchmarks/npu.py " + " ".join(sys.argv[1:])
        doc["models"][model] = m
    doc["models"] = {k: doc["models"][k] for k in MODELS if k in doc["models"]}
    hosts = {m["host"]["cpu"] for m in doc["models"].values() if m.get("host")}
    doc.update(command="python benchmarks/npu.py " + " ".join(sys.argv[1:]), vela=vela_version(),
               host_cpu=", ".join(sorted(h for h in hosts if h)) or None, provenance=provenance())
    atomic_write_json(out, doc)
    atomic_write_text(BENCHMARKS / "NPU.md", markdown(doc))
    print(f"wrote {out} and {BENCHMARKS / 'NPU.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
