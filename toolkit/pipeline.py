"""`toolkit run`: train, export, parity, bench and the report, in one command."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from toolkit import exporters
from toolkit.config import BenchConfig, ExportConfig, ParityConfig, TrainConfig
from toolkit.errors import DataError

QUICK_TRAIN_LIMIT = 12_000


@dataclass(frozen=True)
class RunConfig:
    train: TrainConfig
    export: ExportConfig
    parity: ParityConfig
    bench: BenchConfig
    skip_train: bool = False
    skip_bench: bool = False
    verbose: bool = True


def quick(cfg: RunConfig) -> RunConfig:
    """The smoke run: a training subset, one epoch, a short benchmark."""
    return replace(
        cfg,
        train=replace(cfg.train, epochs=1, train_limit=cfg.train.train_limit or QUICK_TRAIN_LIMIT),
        export=replace(cfg.export, calibration_samples=min(cfg.export.calibration_samples, 200)),
        bench=replace(cfg.bench, batch_sizes=(1, 32), threads=(1,), warmup_runs=5, warmup_seconds=0.05,
                      min_runs=20, min_seconds=0.2),
    )


def _stage(n: int, total: int, title: str, verbose: bool = True) -> float:
    if verbose:
        print(f"\n[{n}/{total}] {title}", file=sys.stderr, flush=True)
    return time.perf_counter()


def run(cfg: RunConfig) -> dict:
    """Run every stage; return the paths and the parity report (gates decide the exit code)."""
    from toolkit import tflm as micro
    from toolkit.bench import run_bench
    from toolkit.bench import write_outputs as write_bench
    from toolkit.export import export
    from toolkit.parity import run_parity
    from toolkit.parity import write_outputs as write_parity
    from toolkit.report import write_report
    from toolkit.train import train

    exports = cfg.export.exports
    with_micro = micro.available()
    total = 5 - cfg.skip_bench + with_micro
    stage = 0
    seconds = {}
    stage += 1
    if cfg.skip_train:
        model = Path(cfg.export.model) if cfg.export.model else exports.model_path
        if not model.is_file():
            raise DataError(f"model file {model} not found",
                            hint="give --model PATH, or run without --skip-train to train one into DIR")
        if cfg.verbose:
            print(f"\n[{stage}/{total}] train: skipped, using {model}", file=sys.stderr)
    else:
        t = _stage(stage, total, "train", cfg.verbose)
        train(cfg.train)
        seconds["train"] = time.perf_counter() - t
    stage += 1
    t = _stage(stage, total, "export (every variant)", cfg.verbose)
    export_cfg = cfg.export
    if not cfg.skip_train and export_cfg.dataset is None:
        export_cfg = replace(export_cfg, dataset=cfg.train.dataset, dataset_options=cfg.train.dataset_options)
    chosen = exporters.by_variant(export_cfg.variants) if export_cfg.variants else exporters.select("all", None)
    manifest = export(export_cfg, chosen)
    seconds["export"] = time.perf_counter() - t
    stage += 1
    t = _stage(stage, total, "parity on the full test set", cfg.verbose)
    report = run_parity(cfg.parity)
    paths = write_parity(report, cfg.parity)
    seconds["parity"] = time.perf_counter() - t
    if not cfg.skip_bench:
        stage += 1
        t = _stage(stage, total, "benchmark", cfg.verbose)
        doc = run_bench(cfg.bench)
        bench_failed = doc["failed"]
        paths.update({f"bench_{k}": v for k, v in write_bench(doc, cfg.bench).items()})
        seconds["bench"] = time.perf_counter() - t
    if with_micro:
        from toolkit.footprint import footprint
        from toolkit.footprint import write_outputs as write_footprint

        stage += 1
        _stage(stage, total, "microcontroller footprint" + (" and NPU" if cfg.export.npu else ""), cfg.verbose)
        if any(e["quantization"] == "int8" for e in manifest["artifacts"]):
            doc = footprint(exports, npu=tuple(cfg.export.npu))  # --npu: the report's NPU section too
            paths.update({f"footprint_{k}": v for k, v in write_footprint(doc, exports).items()})
    stage += 1
    _stage(stage, total, "report", cfg.verbose)
    paths["report"] = write_report(exports, paths.get("bench_json"))
    return {"paths": paths, "parity": report, "seconds": seconds, "manifest": manifest,
            "bench_failed": [] if cfg.skip_bench else bench_failed}
