"""`toolkit footprint`: will an int8 model fit a microcontroller? Flash = the model's bytes,
RAM = the tensor arena TFLM's RecordingMicroAllocator measured. The interpreter's own code,
stack and the application are not counted: leave room for them."""

from __future__ import annotations

from pathlib import Path

from toolkit import artifacts, exporters, schema
from toolkit import tflm as micro
from toolkit.errors import DataError
from toolkit.exportdir import ExportDir
from toolkit.provenance import provenance


def footprint(exports: ExportDir | Path, devices: tuple[micro.DeviceClass, ...] = micro.DEVICE_CLASSES,
              npu: tuple[str, ...] = (), log=lambda line: None) -> dict:
    """The TFLM footprint of each int8 variant and, for each NPU configuration in ``npu`` (toolkit/targets),
    what its compiler places where and estimates."""
    exports = ExportDir.of(exports)
    with exports.reading() as manifest:  # hold this generation while reading it
        extra = {}
        if npu:
            from toolkit.targets import analyse_export

            extra["npu"] = analyse_export(exports, manifest, list(npu), log)
        rows, known = [], exporters.load_all()
        for entry in manifest["artifacts"]:
            if entry.get("quantization") != "int8":
                continue
            path = exports.verified(entry)
            row = {"variant": entry["variant"], "format": entry["format"]}
            if entry["format"] not in known:  # a newer toolkit's export
                raise DataError(f"{entry['variant']}: no microcontroller footprint is known for format "
                                f"{entry['format']!r} (known: {', '.join(known)})")
            declared = known[entry["format"]].footprint
            if declared is None:
                row.update(model_bytes=schema.model_bytes(entry), arena_bytes=None,
                           note=f"TFLM runs TFLite models only; no arena measured for {entry['format']}")
            else:
                row.update(declared(entry, path))
            if row["arena_bytes"] is None:
                rows.append(row)
                continue
            row["devices"] = [micro.fits(row["model_bytes"], row["arena_bytes"], d) for d in devices]
            rows.append(row)
        return schema.Footprint.versioned({
            "variants": rows, "devices": [vars(d) for d in devices],
            "counted": "flash = model bytes; RAM = TFLM tensor arena. Not counted: interpreter code, stack, application",
            **extra, "provenance": provenance()})


def markdown(doc: dict) -> str:
    lines = ["# Microcontroller footprint (int8 variants)", "", doc["counted"] + ".", ""]
    devices = doc["devices"]
    head = ["variant", "model bytes (flash)", "arena bytes (RAM)", "operators",
            *[f"{d['name']} ({d['flash'] // 1024} KB / {d['ram'] // 1024} KB)" for d in devices]]
    lines += ["| " + " | ".join(head) + " |", "|---|---:|---:|---|" + "---|" * len(devices)]
    notes = []
    for r in doc["variants"]:
        if r.get("arena_bytes") is None:
            lines.append(f"| {r['variant']} | {r['model_bytes']:,} | - | - | " + " | ".join("-" for _ in devices)
                         + " |")
            notes.append(f"{r['variant']}: {r['note']}.")
            continue
        cells = []
        for f in r["devices"]:
            if f["fits"]:
                cells.append("fits")
            else:
                why = [w for w, ok in (("flash", f["fits_flash"]), ("RAM", f["fits_ram"])) if not ok]
                cells.append("no: " + " and ".join(why))
        lines.append(f"| {r['variant']} | {r['model_bytes']:,} | {r['arena_bytes']:,} | "
                     f"{', '.join(sorted(set(r['ops'])))} | " + " | ".join(cells) + " |")
    lines += ["", *notes, "", "Device classes: " + "; ".join(f"{d['name']}: {d['example']}" for d in devices) + ".", ""]
    if doc.get("npu"):
        lines += npu_markdown(doc["npu"])
    return "\n".join(lines)


def npu_markdown(npu: dict) -> list[str]:
    """The NPU section: per variant and configuration, operators on the NPU and CPU, memory, estimated time."""
    lines = ["## Arm Ethos-U NPU (Vela's estimates, not measurements)", "",
             "| variant | configuration | NPU operators | CPU operators | SRAM KiB | off-chip flash KiB | DRAM KiB "
             "| est. ms / inference (NPU part) | est. inferences/s | MACs |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in npu["rows"]:
        ops = r["operators"]
        lines.append(f"| {r['variant']} | {r['target']} | {ops['npu']} of {ops['total']} | {ops['cpu']} | "
                     f"{r['sram_kib']:.1f} | {r['off_chip_flash_kib']:.1f} | {r['dram_kib']:.1f} | "
                     f"{r['inference_ms']:.3f} | {r['inferences_per_second']:.1f} | {r['macs']:,} |")
    fallbacks = [(r, f) for r in npu["rows"] for f in r["cpu_fallbacks"]]
    if fallbacks:
        lines += ["", "Operators Vela places on the CPU, with its reason:", ""]
        lines += [f"- {r['variant']} on {r['target']}: {f['operator']} ({f['output']}): {f['reason']}" for r, f in fallbacks]
        lines += ["", "Vela's time covers the operators on the NPU only: the CPU operators' time is not in it."]
    else:
        lines += ["", "Every operator runs on the NPU in every configuration."]
    if npu["not_analysed"]:
        lines += ["", "Not compiled for the NPU:", ""] + [f"- {s['variant']}: {s['reason']}" for s in npu["not_analysed"]]
    lines += ["", "Configurations (Vela's Arm/vela.ini): " + "; ".join(
        f"{t['name']}: {t['description']} ({t['accelerator']}, --system-config {t['system_config']}, --memory-mode "
        f"{t['memory_mode']})" for t in npu["targets"]) + ".",
        "Compiled files (they run only with the Ethos-U driver): " + ", ".join(
            sorted({r["compiled"]["path"] for r in npu["rows"]})) + ".", ""]
    return lines


def write_outputs(doc: dict, exports: ExportDir | Path, json_path: Path | None = None) -> dict[str, Path]:
    exports = ExportDir.of(exports)
    json_path = Path(json_path) if json_path else exports.footprint_path
    md = exports.markdown_beside(json_path)
    artifacts.atomic_write_json(json_path, doc)
    artifacts.atomic_write_text(md, markdown(doc))
    return {"json": json_path, "markdown": md}
