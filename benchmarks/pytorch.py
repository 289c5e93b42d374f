"""A classifier written in PyTorch through every command (issue #36): a MobileNet-style network (depthwise-separable
blocks with batch normalisation, squeeze-excite, hard-swish, as MobileNetV3 is written, in plain PyTorch: no
torchvision), trained briefly on MNIST upsampled to 32x32 RGB (the .npz benchmarks/ptq.py makes: 20,000 training
images, 2,000 validation images never trained on, the 10,000 test images), saved with torch.export.save.

    python benchmarks/pytorch.py [--work /tmp/toolkit-pytorch] [--steps 1500] [--from-json]

Two references, each exported into its own directory and judged there: the ``.pt2`` itself (PyTorch eager is the
reference) and the same network exported by PyTorch's own ONNX exporter (``torch.onnx.export(dynamo=True)``: a
file this toolkit did not make; onnxruntime in float is the reference). For each: `toolkit export` (every format:
the TFLite ones are failed rows with their reason), `toolkit parity` on the whole test set (each variant against
the reference in its own framework: verdicts on intervals), `toolkit bench` at batch 1 and 32, one thread, twice
(the p50 of both runs is reported, and the spread between them). The float accuracy is PyTorch's own, counted in
this script on the same test images before the toolkit sees the model.

Writes results/pytorch.json and PYTORCH.md (every number from the JSON).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
from _common import BENCHMARKS, RESULTS, cpu_text, parser, run_toolkit

from toolkit import schema
from toolkit.artifacts import atomic_write_json, atomic_write_text, read_json
from toolkit.provenance import provenance

BATCHES = ("1", "32")


def network():
    """The MobileNet-style classifier: 3x32x32 -> 10 logits."""
    import torch
    from torch import nn

    class SqueezeExcite(nn.Module):
        def __init__(self, channels: int, reduced: int):
            super().__init__()
            self.down, self.up = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)

        def forward(self, x):
            s = torch.relu(self.down(x.mean((2, 3), keepdim=True)))
            return x * nn.functional.hardsigmoid(self.up(s))

    def block(cin: int, cout: int, stride: int, expand: int, se: bool) -> nn.Sequential:
        mid = cin * expand
        layers = [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.Hardswish(),
                  nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.Hardswish()]
        if se:
            layers.append(SqueezeExcite(mid, max(8, mid // 4)))
        layers += [nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers)

    class MobileNetish(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
            self.blocks = nn.Sequential(block(16, 24, 2, 3, False), block(24, 24, 1, 3, True),
                                        block(24, 40, 2, 4, True), block(40, 48, 1, 4, True))
            self.head = nn.Sequential(nn.Conv2d(48, 96, 1), nn.Hardswish())
            self.classifier = nn.Linear(96, 10)

        def forward(self, x):
            x = self.head(self.blocks(self.stem(x)))
            return self.classifier(x.mean((2, 3)))

    return MobileNetish()


def train(npz: Path, work: Path, steps: int, log) -> dict:
    """Trained with Adam and a cosine schedule (fixed seed), saved as WORK/net.pt2 and WORK/net.onnx; PyTorch's
    own accuracy on the validation and test images."""
    import torch

    torch.manual_seed(0)
    data = np.load(npz)
    to_nchw = lambda x: np.ascontiguousarray(np.transpose(x.astype(np.float32) / 255.0, (0, 3, 1, 2)))  # noqa: E731
    x, y = to_nchw(data["x_train"]), data["y_train"].astype(np.int64)
    net = network()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for step in range(steps):
        j = rng.integers(0, len(x), 64)
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x[j])), torch.from_numpy(y[j]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % 250 == 0:
            log(f"  step {step}: loss {loss.item():.3f}")
    seconds = time.perf_counter() - start
    net.eval()

    def accuracy(images, labels) -> float:
        with torch.no_grad():
            out = np.concatenate([net(torch.from_numpy(to_nchw(images[i : i + 500]))).numpy()
                                  for i in range(0, len(images), 500)])
        return float((out.argmax(1) == labels).mean())

    example = (torch.from_numpy(x[:2]),)
    batch = ({0: torch.export.Dim("batch")},)
    torch.export.save(torch.export.export(net, example, dynamic_shapes=batch), work / "net.pt2")
    torch.onnx.export(net, example, str(work / "net.onnx"), dynamo=True, dynamic_shapes=batch, external_data=True)
    return {"architecture": "MobileNet-style (depthwise-separable blocks, BN, squeeze-excite, hard-swish), plain torch",
            "parameters": int(sum(p.numel() for p in net.parameters())), "steps": steps, "batch": 64,
            "optimizer": "Adam 2e-3, cosine", "train_images": int(len(x)), "seconds": round(seconds, 1),
            "torch": torch.__version__, "validation_accuracy": accuracy(data["x_val"], data["y_val"]),
            "test_accuracy": accuracy(data["x_test"], data["y_test"])}


def through_commands(model: Path, npz: Path, out: Path, log) -> dict:
    """export, parity and bench (twice) of one reference; each command's exit code and what it wrote."""
    shutil.rmtree(out, ignore_errors=True)
    record: dict = {"model": model.name}
    log(f"{model.name}: export")
    record["export_exit"] = run_toolkit("export", "--model", model, "--dataset", npz, "--exports", out, "--format",
                                        "all", "--quiet").returncode
    manifest = schema.Manifest.read(out)
    record["exported"] = [{k: e[k] for k in ("variant", "bytes", "sha256", "inputs")} for e in manifest["artifacts"]]
    record["failed"] = [{k: f.get(k) for k in ("variant", "stage", "reason")} for f in manifest["failed"]]
    log(f"{model.name}: parity")
    record["parity_exit"] = run_toolkit("parity", "--exports", out, "--quiet").returncode
    parity = schema.Parity.read(out)
    record["reference"] = {k: parity["reference"][k] for k in ("framework", "runtime", "accuracy", "images")
                           if k in parity["reference"]}
    record["variants"] = {name: {k: v.get(k) for k in ("accuracy", "accuracy_diff_points", "accuracy_diff_ci95_points",
                                                         "agreement", "agreement_ci95", "max_abs_logit_diff",
                                                         "verdict", "images", "runtime")}
                          for name, v in parity["variants"].items()}
    record["bench"] = []
    for run in (1, 2):
        log(f"{model.name}: bench run {run}")
        code = run_toolkit("bench", "--exports", out, "--batch-sizes", *BATCHES, "--threads", "1", "--quiet",
                           "--no-plots").returncode
        bench = schema.Bench.read(out)
        record["bench"].append({"exit": code, "rows": [
            {k: r.get(k) for k in ("variant", "runtime", "batch_size", "p50_ms", "p50_ci95_ms", "runs")}
            for r in bench["results"]], "failed": bench.get("failed", []), "provenance": bench.get("provenance")})
    return record


def markdown(doc: dict) -> str:
    t = doc["train"]
    lines = ["# A PyTorch classifier through every command", "",
             f"Written by `{doc['command']}` from `results/pytorch.json`. {t['architecture']}: {t['parameters']:,} "
             f"parameters, {t['steps']:,} steps of {t['batch']} images ({t['optimizer']}) on {t['train_images']:,} "
             f"MNIST images upsampled to 32x32 RGB, PyTorch {t['torch']}. PyTorch's own accuracy (this script, "
             f"before the toolkit sees the model): {t['validation_accuracy']:.2%} on the 2,000 validation images, "
             f"{t['test_accuracy']:.2%} on the 10,000 test images.", "",
             "Each reference is exported into its own directory; `toolkit parity` judges every file against it in its "
             "own framework on the whole test set (verdicts on intervals: docs/verdicts.md), and `toolkit bench` "
             "times each file at batch 1 and 32 with one thread, run twice.", ""]
    for key, title in (("pt2", "The .pt2 (PyTorch eager is the reference)"),
                       ("onnx", "torch.onnx.export's file (onnxruntime in float is the reference)")):
        r = doc["references"][key]
        ref = r["reference"]
        failed = " (variants failed: listed below)" if r["export_exit"] == 7 else ""
        lines += [f"## {title}", "",
                  f"Reference: the {ref.get('framework')} model on {ref.get('runtime')}, accuracy {ref['accuracy']:.2%} "
                  f"on {ref.get('images', 10000):,} test images. `toolkit export` exited {r['export_exit']}{failed}, "
                  f"`toolkit parity` {r['parity_exit']}.", "",
                  "| variant | runtime | accuracy | diff pts (95% CI) | agreement (95% CI) | max abs logit diff | verdict |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for name, v in r["variants"].items():
            lo, hi = v["accuracy_diff_ci95_points"]
            alo, ahi = v["agreement_ci95"]
            lines.append(f"| {name} | {v['runtime']} | {v['accuracy']:.2%} | {v['accuracy_diff_points']:+.2f} "
                         f"({lo:+.2f} to {hi:+.2f}) | {v['agreement']:.2%} ({alo:.2%} to {ahi:.2%}) | "
                         f"{v['max_abs_logit_diff']:.2g} | {v['verdict']} |")
        reasons: dict = {}
        for f in r["failed"]:
            reasons.setdefault((f["stage"], f["reason"]), []).append(f["variant"])
        lines += [""] + [f"Not exported ({stage}): {', '.join(names)}: {reason}" for (stage, reason), names in
                         reasons.items()]
        lines += ["", "| variant | runtime | batch | p50 ms run 1 (95% CI) | p50 ms run 2 (95% CI) | run 2 / run 1 |",
                  "|---|---|---:|---:|---:|---:|"]
        second = {(x["variant"], x["runtime"], x["batch_size"]): x for x in r["bench"][1]["rows"]}
        for row in r["bench"][0]["rows"]:
            other = second.get((row["variant"], row["runtime"], row["batch_size"]))
            cell = lambda x: f"{x['p50_ms']:.3f} ({x['p50_ci95_ms'][0]:.3f} to {x['p50_ci95_ms'][1]:.3f})"  # noqa: E731
            name = "reference" if row["variant"] == "keras" else row["variant"]
            lines.append(f"| {name} | {row['runtime']} | {row['batch_size']} | {cell(row)} | "
                         + (f"{cell(other)} | {other['p50_ms'] / row['p50_ms']:.2f}x |" if other else "- | - |"))
        not_timed = {(f.get("variant"), f.get("runtime"), f.get("batch"), f.get("reason")) for f in r["bench"][0]["failed"]}
        lines += [""] + [f"Not timed: {'reference' if v == 'keras' else v} on {rt} "
                         f"{f'at batch {b}' if b else '(it does not load)'}: {why}"
                         for v, rt, b, why in sorted(not_timed, key=str)]
        lines.append("")
    machine = (doc["references"]["pt2"]["bench"][0].get("provenance") or {}).get("machine", {})
    lines += [f"Machine: {cpu_text(machine)}. Latency is the toolkit's timer around each runtime's raw call (docs/reference.md); "
              "the row `reference` is the model in its own framework.", ""]
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--work", type=Path, default=Path("/tmp/toolkit-pytorch"))
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--from-json", action="store_true", help="rewrite PYTORCH.md from results/pytorch.json only")
    args = p.parse_args()
    out_json = RESULTS / "pytorch.json"
    if args.from_json:
        atomic_write_text(BENCHMARKS / "PYTORCH.md", markdown(read_json(out_json)))
        return
    import os

    from ptq import mnist_rgb

    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    data_dir = (args.data_dir or Path(os.environ["TOOLKIT_DATA_DIR"])).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    npz = mnist_rgb(data_dir, args.work / "mnist32rgb-val.npz")
    log("training the PyTorch network")
    doc = {"command": "python benchmarks/pytorch.py" + (f" --steps {args.steps}" if args.steps != 1500 else ""),
           "train": train(npz, args.work, args.steps, log), "references": {}}
    for key, name in (("pt2", "net.pt2"), ("onnx", "net.onnx")):
        doc["references"][key] = through_commands(args.work / name, npz, args.work / f"exports-{key}", log)
    doc["provenance"] = provenance()
    atomic_write_json(out_json, doc)
    atomic_write_text(BENCHMARKS / "PYTORCH.md", markdown(doc))
    log(f"wrote {out_json} and {BENCHMARKS / 'PYTORCH.md'}")


if __name__ == "__main__":
    main()
