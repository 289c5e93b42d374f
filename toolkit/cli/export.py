"""`toolkit export` and `toolkit verify` command-line wiring."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.cli.common import (
    dataset_args,
    exports_arg,
    positive_int,
    preprocess_args,
    preprocess_options,
    quiet_arg,
)


def export_args(p: argparse.ArgumentParser) -> None:
    quiet_arg(p)
    from toolkit.config import ExportConfig

    d = ExportConfig()
    p.add_argument("--format", nargs="+", default=["all"], choices=("tflite", "onnx", "tflite-micro", "openvino", "all"),
                   metavar="FORMAT",
                   help="what to export, one or more of tflite, onnx, tflite-micro, openvino, all (default: all). "
                   "Without --quantize: tflite -> tflite, "
                   "tflite-int8; onnx -> onnx, onnx-int8; tflite-micro -> the int8 model as C source and "
                   "header for TFLM (needs [micro]); openvino -> OpenVINO IR .xml + .bin (needs [openvino]); "
                   "all -> every variant of every format whose dependency is installed")
    p.add_argument("--quantize", nargs="+", metavar="MODE", choices=("none", "fp16", "dynamic", "int8"),
                   help="only these quantizations: none (float32), fp16 (TFLite, OpenVINO), dynamic "
                   "(dynamic-range int8 weights; TFLite), int8 (full-integer, calibrated)")
    exports_arg(p)
    p.add_argument("--model", type=Path, default=None, metavar="PATH",
                   help="Keras image classifier (.keras) to export: any single-input model taking (H, W, C), "
                   "(H, W) or flat images and giving K class scores, logits or probabilities "
                   "(default: DIR/model.keras)")
    dataset_args(p, "the dataset the model was trained on by `toolkit train`, else mnist")
    p.add_argument("--calibration-samples", type=positive_int, default=d.calibration_samples, metavar="N",
                   help="training images used to calibrate int8 variants, a fixed-seed sample; all of them "
                   "when the training split is smaller (default: %(default)s)")
    p.add_argument("--calibration-method", default=d.calibration_method,
                   choices=("minmax", "entropy", "percentile"),
                   help="onnx-int8 calibration method (default: %(default)s); TFLite uses min/max")
    p.add_argument("--opset", type=int, default=d.opset, metavar="N",
                   help="ONNX opset, 17 or newer (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing export in DIR")
    control = p.add_argument_group(
        "accuracy-controlled int8 (tflite-int8, tflite-micro, onnx-int8)",
        "measure plain int8's accuracy drop against the Keras model on the validation split (never the test "
        "set); when its upper 95% bound exceeds the budget, raise the precision of the layer that adds the most "
        "quantization error (16-bit activations first, then float; TFLM: 16-bit only) and repeat, then lower back "
        "what the budget does not need. The recipe goes "
        "to the manifest and DIR/quantization-recipe.json; exit 4 when the budget cannot be met (the best model "
        "found is kept)")
    control.add_argument("--max-accuracy-drop", type=float, default=None, metavar="PTS",
                         help="budget: the upper 95%% bound of the validation accuracy drop, in points (e.g. 0.3)")
    control.add_argument("--min-agreement", type=float, default=d.min_agreement, metavar="PCT",
                         help="also agree with Keras on at least PCT%% of validation images (parity's int8 gate is "
                         "99.5); off by default: agreement is paid for in float layers, since int8 weights still "
                         "move predictions that the accuracy budget lets through")
    control.add_argument("--max-fallback-layers", type=positive_int, default=d.max_fallback_layers, metavar="N",
                         help="at most N layers changed (default: %(default)s)")
    control.add_argument("--recipe", type=Path, default=None, metavar="FILE",
                         help="replay a quantization-recipe.json without searching (the same bytes every time)")
    preprocess_args(p)


def export_run(args: argparse.Namespace) -> int:
    from toolkit import exporters
    from toolkit.config import ExportConfig
    from toolkit.errors import PartialExportError
    from toolkit.export import export, failure_lines

    chosen = exporters.select(tuple(args.format), tuple(args.quantize) if args.quantize else None)
    cfg = ExportConfig(
        exports=args.exports, variants=tuple(e.variant for e in chosen), model=args.model,
        data_dir=args.data_dir, dataset=args.dataset, test_fraction=args.test_fraction,
        preprocess=preprocess_options(args), calibration_samples=args.calibration_samples,
        calibration_method=args.calibration_method, opset=args.opset, force=args.force, verbose=not args.quiet,
        max_accuracy_drop=args.max_accuracy_drop, max_fallback_layers=args.max_fallback_layers, recipe=args.recipe,
        min_agreement=args.min_agreement,
    )
    manifest = export(cfg, chosen)
    print(f"{'variant':<15} {'model bytes':>11}  {'seconds':>7}  path")
    for e in manifest["artifacts"]:
        print(f"{e['variant']:<15} {e.get('model_bytes', e['bytes']):>11}  {e['conversion_seconds']:>7.1f}  "
              f"{args.exports / e['path']}")
    for line in failure_lines(manifest):
        print(line)
    missed = []
    for e in manifest["artifacts"]:
        record = e.get("accuracy_control")
        if record:
            print(f"{e['variant']}: {record['outcome']}")
            if record.get("met") is False:
                missed.append(f"{e['variant']}: {record['outcome']}")
    print(f"wrote {args.exports / 'manifest.json'}")
    if "accuracy_control" in manifest:
        print(f"wrote {args.exports / manifest['accuracy_control']['recipe']}")
    if missed and not args.recipe:
        from toolkit.errors import GateError

        raise GateError("accuracy budget not met; the best model found was exported: " + "; ".join(missed))
    if manifest["failed"]:
        raise PartialExportError(f"{len(manifest['failed'])} of {len(chosen)} variant(s) could not be exported "
                                 f"({', '.join(f['variant'] for f in manifest['failed'])}); the others were "
                                 f"committed", hint=f"reasons in {args.exports / 'manifest.json'} under 'failed'")
    return 0


def verify_args(p: argparse.ArgumentParser) -> None:
    quiet_arg(p)
    exports_arg(p)
    p.add_argument("--rebuild", action="store_true",
                   help="also export again from the same model, data and settings into a temporary directory and "
                   "name every artifact whose bytes differ from the manifest's sha256 (exit 3)")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="with --rebuild of an MNIST export: the MNIST IDX directory (default: $TOOLKIT_DATA_DIR)")


def verify_run(args: argparse.Namespace) -> int:
    from toolkit.verify import rebuild, verify

    lines = rebuild(args.exports, args.data_dir) if args.rebuild else verify(args.exports)
    for line in lines:
        print(line)
    return 0


COMMANDS = {
    "export": (
        export_args, export_run,
        "convert the trained model (or any Keras classifier) to TFLite and ONNX (float and int8)",
        "Convert DIR/model.keras (or --model PATH, any Keras image classifier) into deployable "
        "artifacts, check each one loads in its own runtime and agrees with Keras on a fixed batch "
        "of test images, and write DIR/manifest.json (sizes, sha256, tensor specs, quantization, "
        "calibration, dataset, preprocessing, versions). Each format's op support is checked first; "
        "a variant that cannot be made is listed in the manifest with the reason while the others "
        "are committed (exit 7). Atomic: a failed export leaves the previous one untouched.",
    ),
    "verify": (
        verify_args, verify_run,
        "check every exported file against the manifest and that it loads",
        "For each artifact in DIR/manifest.json: exists, size and sha256 match, and it loads in "
        "its runtime. Exit 3 naming the first problem. --rebuild also re-exports from the same model, "
        "data and settings and names every artifact whose bytes differ (reproducible builds; "
        "$SOURCE_DATE_EPOCH fixes the time written into model.keras).",
    ),
}
