"""`toolkit export` and `toolkit verify` command-line wiring."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.cli import _data_dir_arg, _exports_arg, _positive_int


def export_args(p: argparse.ArgumentParser) -> None:
    from toolkit.config import ExportConfig

    d = ExportConfig()
    p.add_argument("--format", default="all", choices=("tflite", "onnx", "tflite-micro", "all"),
                   help="what to export (default: %(default)s). Without --quantize: tflite -> tflite, "
                   "tflite-int8; onnx -> onnx, onnx-int8; tflite-micro -> the int8 model as C source and "
                   "header for TFLM (needs [micro]); all -> all six, plus tflite-micro when installed")
    p.add_argument("--quantize", nargs="+", metavar="MODE", choices=("none", "fp16", "dynamic", "int8"),
                   help="only these quantizations: none (float32), fp16, dynamic (dynamic-range int8 "
                   "weights; TFLite), int8 (full-integer, calibrated)")
    _exports_arg(p)
    p.add_argument("--model", type=Path, default=None, metavar="PATH",
                   help="Keras model to export (default: DIR/model.keras)")
    _data_dir_arg(p)
    p.add_argument("--calibration-samples", type=_positive_int, default=d.calibration_samples, metavar="N",
                   help="training images used to calibrate int8 variants (default: %(default)s)")
    p.add_argument("--calibration-method", default=d.calibration_method,
                   choices=("minmax", "entropy", "percentile"),
                   help="onnx-int8 calibration method (default: %(default)s); TFLite uses min/max")
    p.add_argument("--opset", type=int, default=d.opset, metavar="N",
                   help="ONNX opset, 17 or newer (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing export in DIR")


def export_run(args: argparse.Namespace) -> int:
    from toolkit import exporters
    from toolkit.config import ExportConfig
    from toolkit.export import export

    chosen = exporters.select(args.format, tuple(args.quantize) if args.quantize else None)
    cfg = ExportConfig(
        exports=args.exports, variants=tuple(e.variant for e in chosen), model=args.model,
        data_dir=args.data_dir, calibration_samples=args.calibration_samples,
        calibration_method=args.calibration_method, opset=args.opset, force=args.force,
    )
    manifest = export(cfg, chosen)
    print(f"{'variant':<15} {'bytes':>10}  {'seconds':>7}  path")
    for e in manifest["artifacts"]:
        print(f"{e['variant']:<15} {e['bytes']:>10}  {e['conversion_seconds']:>7.1f}  {args.exports / e['path']}")
    print(f"wrote {args.exports / 'manifest.json'}")
    return 0


def verify_args(p: argparse.ArgumentParser) -> None:
    _exports_arg(p)


def verify_run(args: argparse.Namespace) -> int:
    from toolkit.verify import verify

    for line in verify(args.exports):
        print(line)
    return 0


COMMANDS = {
    "export": (
        export_args, export_run,
        "convert the trained model to TFLite and ONNX (float and int8)",
        "Convert DIR/model.keras into deployable artifacts, check each one loads in its own "
        "runtime and agrees with Keras on a fixed batch of test images, and write "
        "DIR/manifest.json (sizes, sha256, tensor specs, quantization, calibration, versions). "
        "Atomic: a failed export leaves the previous one untouched.",
    ),
    "verify": (
        verify_args, verify_run,
        "check every exported file against the manifest and that it loads",
        "For each artifact in DIR/manifest.json: exists, size and sha256 match, and it loads in "
        "its runtime. Exit 3 naming the first problem.",
    ),
}
