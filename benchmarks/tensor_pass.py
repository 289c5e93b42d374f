"""The accuracy search with its tensor pass on models where plain int8 does not pass parity (issue #35).

    python benchmarks/tensor_pass.py [--work /tmp/toolkit-tensor] [--models mobilenetv2 mobilenetv3small efficientnetb0] [--from-json]

Each model is trained as benchmarks/ptq.py trains it (keras.applications, weights=None, 32x32 RGB MNIST, 20,000
training images, seed 0). Its .npz holds 10,000 validation images (MNIST training images 20,000-29,999, never
trained on: the search's half of 5,000 can show parity's 99.5% agreement gate, where PTQ.md's 1,000 cannot) and
MNIST's 10,000 test images. Then

    toolkit export --format tflite --quantize int8 --max-accuracy-drop 0.3 --max-fallback-layers 32 --max-slowdown 1.25

twice (two directories: do both give the same bytes?) and `toolkit parity` on the first. Reported per model: plain
int8's and the kept file's parity verdicts on the test set, what the search kept (layers, the tensor pass's steps,
the confirmation looks), its batch-1 p50 against plain int8's (the search's own measurement, one thread, LiteRT),
and the search's time. Writes results/tensor-pass.json and TENSOR_PASS.md (every number from the JSON).
"""

from __future__ import annotations

import time
from pathlib import Path

from _common import parser, per_model_main, provenance_line, run_toolkit

from toolkit.artifacts import read_json

MODELS = ("mobilenetv2", "mobilenetv3small", "efficientnetb0")
VAL_IMAGES = 10_000
FLAGS = ("--format", "tflite", "--quantize", "int8", "--max-accuracy-drop", "0.3", "--max-fallback-layers", "32",
         "--max-slowdown", "1.25")


def _toolkit(*args: str) -> int:
    return run_toolkit(*args, capture=True).returncode


def _gates(parity: dict, variant: str) -> dict:
    row = parity["variants"].get(variant, {})
    # a replaced plain int8 (VARIANT:plain) has its gates shown, not enforced
    gates = [{"status": g.get("status"), "interval": g.get("interval")}
             for g in row.get("gates") or row.get("gates_if_enforced") or []]
    return {"agreement": row.get("agreement"), "gates": gates,
            "verdict": "pass" if gates and all(g["status"] == "pass" for g in gates) else
            "fail" if any(g["status"] == "fail" for g in gates) else "inconclusive" if gates else None}


def measure(name: str, work: Path, data_dir: Path) -> dict:
    import ptq  # benchmarks/ptq.py, beside this script

    from toolkit import schema

    npz = ptq.mnist_rgb(data_dir, work / "mnist32rgb-val10k.npz", val_images=VAL_IMAGES)
    model = work / name / schema.MODEL
    train = None
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        train = ptq.train_application(name, npz, model)
    runs = []
    for run in (1, 2):
        exports = work / name / f"exports-{run}"
        start = time.perf_counter()
        rc = _toolkit("export", "--model", str(model), "--dataset", str(npz), "--exports", str(exports), "--force",
                      "--quiet", *FLAGS)
        entry = next(a for a in schema.Manifest.read(exports).get("artifacts", []) if a["variant"] == "tflite-int8")
        runs.append({"exit": rc, "seconds": round(time.perf_counter() - start, 1), "sha256": entry["sha256"],
                     "entry": entry})
    first = runs[0]["entry"]
    prc = _toolkit("parity", "--exports", str(work / name / "exports-1"), "--data-dir", str(data_dir), "--quiet")
    parity = read_json(work / name / "exports-1" / schema.PARITY)
    ac = first["accuracy_control"]
    tensor_steps = [{k: s.get(k) for k in ("step", "tensors", "agreement", "p50_ms_batch1")}
                    for s in ac["steps"] if s.get("op") == "tensors"]
    return {"train": train, "validation": f"x_val of {npz.name} ({VAL_IMAGES:,} images the model never trained on)",
            "runs": [{k: v for k, v in r.items() if k != "entry"} for r in runs],
            "same_bytes": runs[0]["sha256"] == runs[1]["sha256"], "parity_exit": prc,
            "plain": _gates(parity, "tflite-int8:plain") if ac.get("source") == "search" else
            _gates(parity, "tflite-int8"), "kept": _gates(parity, "tflite-int8"),
            "search": {"met": ac.get("met"), "source": ac.get("source"), "layers_changed": len(ac.get("layers") or {}),
                       "int8_only": ac.get("int8_only"), "p50_vs_plain": ac.get("p50_vs_plain"),
                       "plain_p50_ms": ac["plain"]["p50_ms_batch1"], "search_seconds": ac.get("search_seconds"),
                       "steps": len(ac["steps"]), "tensor_steps": tensor_steps,
                       "confirmation": {k: v for k, v in (ac.get("confirmation") or {}).items() if k != "looks"},
                       "looks": [{"step": x["step"], "confirmed": x["confirmed"], "text": x["text"]}
                                 for x in (ac.get("confirmation") or {}).get("looks", [])],
                       "outcome": ac.get("outcome")}}


def _row(name: str, m: dict) -> str:
    s = m["search"]

    def verdict(g: dict) -> str:
        return f"{g['verdict']}, {100 * g['agreement']:.2f}%" if g.get("agreement") is not None else "-"

    kept = "plain int8" if s["source"] == "plain" else (
        f"{s['layers_changed']} layer(s) changed{'' if s['int8_only'] else ' (not full-integer)'}")
    ratio = f"{s['p50_vs_plain']:.2f}x" if s.get("p50_vs_plain") else "1.00x (plain)"
    return (f"| {name} | {verdict(m['plain'])} | {verdict(m['kept'])} | {kept} | {ratio} | "
            f"{'met' if s['met'] else 'not met'} | {s['search_seconds']:.0f} | "
            f"{'yes' if m['same_bytes'] else 'no'} |")


def markdown(doc: dict) -> str:
    lines = ["# The accuracy search's tensor pass", "",
             "Written by `python benchmarks/tensor_pass.py` (each model's command and commit below) from "
             "[results/tensor-pass.json](results/tensor-pass.json). Each model "
             "is trained as benchmarks/PTQ.md's are; the search judges on 10,000 validation images the model never "
             "trained on (5,000 to search, 5,000 held out), the verdicts are `toolkit parity`'s on MNIST's 10,000 "
             "test images (agreement with Keras; the loss gate too), p50 is the search's batch-1 measurement on LiteRT, "
             "one thread. The command: `toolkit export " + " ".join(FLAGS) + "`.", "",
             "| model | plain `tflite-int8` on test (verdict, agreement) | kept `tflite-int8` on test | kept | p50 vs "
             "plain int8 | budget on validation | search s | two runs, same bytes |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [_row(name, m) for name, m in doc["models"].items()]
    for name, m in doc["models"].items():
        s = m["search"]
        measured = f" (measured by `{m['command']}`; {provenance_line(m['provenance']).rstrip('.')})" if "provenance" in m else ""
        lines += ["", f"**{name}**{measured}: {s['outcome']}", ""]
        if s["tensor_steps"]:
            lines.append("Tensor steps (agreement on the search's images, batch-1 p50): " + "; ".join(
                f"step {t['step']}: {len(t['tensors'])} tensor(s), {100 * t['agreement']:.2f}%, {t['p50_ms_batch1']:.3f} ms"
                for t in s["tensor_steps"]) + f" (plain int8: {s['plain_p50_ms']:.3f} ms).")
        for look in s["looks"]:
            lines.append(f"- held-out look at step {look['step']}: {look['text']} "
                         f"({'confirmed' if look['confirmed'] else 'not confirmed'})")
    if any("provenance" not in m for m in doc["models"].values()):
        lines += ["", provenance_line(doc["provenance"])]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--work", type=Path, default=Path("/tmp/toolkit-tensor"))
    p.add_argument("--models", nargs="+", default=list(MODELS))
    per_model_main(p, "tensor_pass.py", "tensor-pass.json", "TENSOR_PASS.md", markdown,
                   lambda name, args, data_dir: measure(name, args.work, data_dir))


if __name__ == "__main__":
    main()
