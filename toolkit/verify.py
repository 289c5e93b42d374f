"""`toolkit verify`: the export directory is exactly what its manifest says, and loads; with
``--rebuild``, the export is made again from the same model, data and settings into a temporary
directory and every artifact whose bytes differ from the manifest's sha256 is named."""

from __future__ import annotations

import tempfile
from pathlib import Path

from toolkit.datasets import source_options
from toolkit.errors import DataError
from toolkit.exportdir import ExportDir
from toolkit.runners import runner_for


def verify(exports: ExportDir | Path) -> list[str]:
    exports = ExportDir.of(exports)
    with exports.reading() as manifest:  # hold this generation while reading it
        lines = []
        for entry in manifest["artifacts"]:
            path = exports.verified(entry)
            runner_for(entry["format"], path)
            lines.append(f"ok  {entry['variant']:<15} {entry['bytes']:>10} bytes  sha256 {entry['sha256'][:16]}")
        if manifest.get("labels"):
            exports.verified({"variant": "labels", **manifest["labels"]})
            lines.append(f"ok  {Path(manifest['labels']['path']).name:<15} {manifest['labels']['bytes']:>10} bytes  "
                         f"{manifest['labels']['classes']} class names")
        lines.append(f"{len(manifest['artifacts'])} artifact(s) in {exports.manifest_path} verified")
        return lines


def _digests(entry: dict) -> dict[str, str]:
    """File name -> sha256 for an artifact and its companions (names without the generation dir)."""
    files = {Path(entry["path"]).name: entry["sha256"]}
    files.update({Path(c["path"]).name: c["sha256"] for c in entry.get("companions", [])})
    return files


def rebuild(exports: ExportDir | Path, data_dir: Path | None = None, verbose: bool = False) -> list[str]:
    """Re-export into a temporary directory and compare every artifact's bytes with the manifest."""
    from toolkit import exporters
    from toolkit.config import ExportConfig, PreprocessOptions
    from toolkit.export import export

    exports = ExportDir.of(exports)
    lines = verify(exports)
    manifest = exports.manifest()
    recorded = manifest.get("export_config")
    if not recorded:
        raise DataError(f"{exports.manifest_path} does not record how it was made (an export older than "
                        "--rebuild)", hint="re-export it, then verify --rebuild")
    model = exports.reference_model(manifest)
    exporters.load_all()
    chosen = [exporters.REGISTRY[v] for v in recorded["variants"] if v in exporters.REGISTRY]
    prep = recorded["preprocess"]
    with tempfile.TemporaryDirectory(prefix="toolkit-rebuild-") as tmp:
        again = export(ExportConfig(
            exports=Path(tmp), model=model, data_dir=data_dir, dataset=recorded["dataset"],
            dataset_options=tuple((o.dest, recorded[o.dest]) for o in source_options() if recorded.get(o.dest) is not None),
            preprocess=PreprocessOptions(scale=prep["scale"], color_mode=prep["color_mode"], resize=prep["resize"],
                                         mean=tuple(prep["mean"]) if prep.get("mean") else None,
                                         std=tuple(prep["std"]) if prep.get("std") else None,
                                         input_size=tuple(prep["input_size"]) if prep.get("input_size") else None),
            calibration_samples=recorded["calibration_samples"], calibration_seed=recorded["calibration_seed"],
            calibration_method=recorded["calibration_method"], opset=recorded["opset"],
            check_samples=recorded.get("check_samples", 256), force=True, verbose=verbose,
            max_accuracy_drop=recorded.get("max_accuracy_drop"),
            max_fallback_layers=recorded.get("max_fallback_layers", 5),
            min_agreement=recorded.get("min_agreement"),
            recipe=Path(recorded["recipe"]) if recorded.get("recipe") else None,
            fine_tune=recorded.get("fine_tune", False), fine_tune_epochs=recorded.get("fine_tune_epochs"),
            fine_tune_images=recorded.get("fine_tune_images"),
            learned_rounding=recorded.get("learned_rounding", False), npu=tuple(recorded.get("npu") or ()),
        ), chosen)
    rebuilt = {e["variant"]: e for e in again["artifacts"]}
    differs = []
    for entry in manifest["artifacts"]:
        name = entry["variant"]
        if name not in rebuilt:
            differs.append(name)
            lines.append(f"DIFFERS {name}: the rebuild could not make it")
            continue
        mine, theirs = _digests(entry), _digests(rebuilt[name])
        changed = sorted(f for f in mine if theirs.get(f) != mine[f])
        if changed and entry.get("reproducible", True):
            differs.append(name)
            lines.append(f"DIFFERS {name}: " + "; ".join(
                f"{f} rebuilt sha256 {(theirs.get(f) or '-')[:16]}..., manifest {mine[f][:16]}..." for f in changed))
        elif changed:
            lines.append(f"differs {name} (not expected to be reproducible)")
        else:
            lines.append(f"same    {name:<15} rebuilt byte-identical")
    if differs:
        for line in lines:
            print(line)
        raise DataError(f"{len(differs)} artifact(s) differ from a rebuild from the same model, data and settings: "
                        f"{', '.join(differs)}", hint="they were not made from this model, or by these settings")
    lines.append(f"{len(manifest['artifacts'])} artifact(s) rebuilt byte-identical from {model}")
    return lines
