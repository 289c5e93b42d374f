#!/usr/bin/env bash
# usage: tools/seed_run.sh OUTDIR [MODEL.keras]: train the seed CNN (1 epoch, 12,000 images) unless a model is
# given, then export every format, an accuracy-controlled int8 export, parity, bench, footprint and gate.
# Run it at two commits on the same model and compare with tools/compare_runs.py (a refactor must keep
# the artifacts byte for byte and the JSON the same).
set -euo pipefail
cd "$(dirname "$0")/.."
export TOOLKIT_DATA_DIR="${TOOLKIT_DATA_DIR:-$(cd .. && pwd)/shared/data/mnist}"
OUT=$(realpath -m "$1"); rm -rf "$OUT"; mkdir -p "$OUT"
if [ -z "${2:-}" ]; then
  toolkit train --exports $OUT/model --epochs 1 --train-limit 12000 --quiet
  MODEL=$OUT/model/model.keras
else MODEL=$2; fi
toolkit export --model $MODEL --exports $OUT/exp --format all --quiet || echo "export rc=$?"
toolkit export --model $MODEL --exports $OUT/ctl --format tflite onnx --quantize int8 --max-accuracy-drop 0.5 --quiet || echo "ctl rc=$?"
toolkit parity --exports $OUT/exp --quiet || echo "parity rc=$?"
toolkit bench --exports $OUT/exp --batch-sizes 1 --threads 1 --min-runs 5 --min-seconds 0 --warmup 1 --warmup-seconds 0 --quiet || echo "bench rc=$?"
toolkit footprint --exports $OUT/exp --quiet > $OUT/footprint.txt 2>&1 || echo "fp rc=$?"
toolkit gate --exports $OUT/exp --baseline $OUT/exp --quiet > $OUT/gate.txt 2>&1 || echo "gate rc=$?"
ls $OUT/exp
