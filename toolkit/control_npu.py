"""What the accuracy search's result runs on an Arm Ethos-U NPU (--npu): the plain and the searched model through
Vela, the operators each leaves on the CPU and Vela's estimated times (estimates, not measurements)."""

from __future__ import annotations


def npu_targets(settings, fmt: str) -> list[str]:
    """The NPU configurations of ``settings`` whose compiler takes ``fmt``'s files."""
    if not getattr(settings, "npu", ()):
        return []
    from toolkit.targets import TARGETS

    return [name for name in settings.npu if TARGETS.get(name).reads == fmt]


def npu_outcome(ctx, fmt: str, plain: bytes, content: bytes, levels: dict) -> list[dict] | None:
    """For each NPU configuration named (--npu) whose compiler takes these files: what the plain and the searched
    model run on the NPU and the CPU, the layers the search sent to the CPU, and Vela's estimated time of each
    (estimates)."""
    names = npu_targets(ctx.control, fmt)
    if not names:
        return None
    import tempfile
    from pathlib import Path

    from toolkit.targets import TARGETS

    out = []
    with tempfile.TemporaryDirectory(prefix="toolkit-npu-search-") as tmp:
        files = {"plain": Path(tmp) / "plain.tflite", "searched": Path(tmp) / "searched.tflite"}
        files["plain"].write_bytes(plain)
        files["searched"].write_bytes(content)
        for name in names:
            target = TARGETS.get(name)
            rows = {k: target.analyse(target, path, Path(tmp) / f"{name}-{k}") for k, path in files.items()}
            summary = {k: {"npu_operators": r["operators"]["npu"], "cpu_operators": r["operators"]["cpu"],
                           "estimated_ms": round(r["inference_ms"], 4), "sram_kib": r["sram_kib"]}
                       for k, r in rows.items()}
            floats = sorted(layer for layer, level in levels.items() if level == "float")
            same_split = summary["plain"]["cpu_operators"] == summary["searched"]["cpu_operators"]
            out.append({"target": name, **summary,
                        "left_npu": [{"operator": f["operator"], "output": f["output"], "reason": f["reason"]}
                                     for f in rows["searched"]["cpu_fallbacks"]],
                        "float_layers": floats,
                        # Vela times the NPU's operators only: with operators moved to the CPU the two are not comparable
                        "estimated_ms_cost": (round(rows["searched"]["inference_ms"] - rows["plain"]["inference_ms"], 4)
                                              if same_split else None),
                        "cost_note": None if same_split else (
                            f"{summary['searched']['cpu_operators'] - summary['plain']['cpu_operators']} more operator(s) "
                            "run on the CPU, whose time Vela does not estimate: measure them on the device"),
                        "estimate": "Vela's performance model, not a measurement; its time covers the NPU's operators "
                                    "only"})
    return out
