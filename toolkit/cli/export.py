"""`toolkit export` and `toolkit verify` command-line wiring."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit import schema
from toolkit.cli.common import (
    check_export_flags,
    check_preprocess_flags,
    dataset_args,
    dataset_options,
    export_options_args,
    export_settings,
    exports_arg,
    json_arg,
    preprocess_args,
    preprocess_options,
    quiet_arg,
    write_json_result,
)


def export_args(p: argparse.ArgumentParser) -> None:
    quiet_arg(p)
    exports_arg(p)
    p.add_argument("--model", type=Path, default=None, metavar="PATH",
                   help="image classifier to export: a Keras model (.keras), a PyTorch model saved with "
                   "torch.export.save (.pt2, needs [torch]) or an ONNX model (.onnx); one input taking (H, W, C), "
                   "(C, H, W), (H, W) or flat images and giving K class scores, logits or probabilities; every file "
                   "is checked against it in its own framework (default: DIR/model.keras)")
    dataset_args(p, "the dataset the model was trained on by `toolkit train`, else mnist")
    export_options_args(p)
    json_arg(p, "the manifest (DIR/manifest.json) with each file's full path")
    preprocess_args(p)


def export_run(args: argparse.Namespace) -> int:
    from toolkit.config import ExportConfig
    from toolkit.errors import PartialExportError
    from toolkit.export import export, failure_lines, warning_lines

    check_export_flags(args)
    check_preprocess_flags(args)
    settings, chosen = export_settings(args)
    cfg = ExportConfig(exports=args.exports, model=args.model, data_dir=args.data_dir, dataset=args.dataset,
                       dataset_options=dataset_options(args), preprocess=preprocess_options(args),
                       verbose=not args.quiet, **settings)
    manifest = export(cfg, chosen)
    write_json_result(args, {"manifest": manifest, "files": {e["variant"]: str(args.exports.named(e["path"]))
                                                             for e in manifest["artifacts"]}})
    print(f"{'variant':<15} {'model bytes':>11}  {'seconds':>7}  path")
    for e in manifest["artifacts"]:
        print(f"{e['variant']:<15} {schema.model_bytes(e):>11}  {e['conversion_seconds']:>7.1f}  "
              f"{args.exports.named(e['path'])}")
    for line in [*warning_lines(manifest), *failure_lines(manifest)]:
        print(line)
    missed = []
    for e in manifest["artifacts"]:
        record = e.get("accuracy_control")
        if record:
            print(f"{e['variant']}: {record['outcome']}")
            if record.get("met") is False:
                missed.append(f"{e['variant']}: {record['outcome']}")
    print(f"wrote {args.exports.manifest_path}")
    if "accuracy_control" in manifest:
        print(f"wrote {args.exports.named(manifest['accuracy_control']['recipe'])}")
    if missed and not args.recipe:
        from toolkit.errors import GateError

        raise GateError("accuracy budget not met; the best model found was exported: " + "; ".join(missed))
    if manifest["failed"]:
        raise PartialExportError(f"{len(manifest['failed'])} of {len(chosen)} variant(s) could not be exported "
                                 f"({', '.join(f['variant'] for f in manifest['failed'])}); the others were "
                                 f"committed", hint=f"reasons in {args.exports.manifest_path} under 'failed'")
    return 0


def verify_args(p: argparse.ArgumentParser) -> None:
    quiet_arg(p)
    exports_arg(p)
    p.add_argument("--rebuild", action="store_true",
                   help="also export again from the same model, data and settings into a temporary directory and "
                   "name every artifact whose bytes differ from the manifest's sha256 (exit 3)")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="with --rebuild of an MNIST export: the MNIST IDX directory (default: $TOOLKIT_DATA_DIR)")
    json_arg(p, "what was checked ({\"verified\": true, \"lines\": [...]}; a failed check exits 3 and writes "
             "{\"verified\": false, \"error\": ...})")


def verify_run(args: argparse.Namespace) -> int:
    from toolkit.errors import ToolkitError
    from toolkit.verify import rebuild, verify

    try:
        lines = rebuild(args.exports, args.data_dir) if args.rebuild else verify(args.exports)
    except ToolkitError as exc:
        write_json_result(args, {"verified": False, "error": str(exc), "exit_code": exc.exit_code})
        raise
    write_json_result(args, {"verified": True, "lines": lines})
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
