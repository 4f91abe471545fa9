#!/bin/sh
# Reproduce the shipped model: a 4-fold patient-level cross-validation of MURA train/ with one
# EfficientNet-Lite0 per fold, combined into one ensemble (thresholds from the out-of-fold
# predictions), then the one evaluation on valid/.  About 75 minutes on 2 CPU cores.
#   MURA_ROOT  the MURA v1.1 folder (required)
#   RUNS       where the members go (default runs/); NAME: the model folder (default mura_efficientnet_lite0)
# Two folds train at a time with one thread each: on 2 cores that beats one run with two threads,
# which stalls whenever anything else uses the CPU. Rerun after a stop: each fold resumes.
set -eu
cd "$(dirname "$0")/.."
: "${MURA_ROOT:?set MURA_ROOT to your MURA v1.1 folder}"
RUNS="${RUNS:-runs}"
NAME="${NAME:-mura_efficientnet_lite0}"
PY="${PY:-.venv/bin/python}"
fold() {
  "$PY" -m core.train --mura-root "$MURA_ROOT" --arch efficientnet_lite0 --input-size 224 --epochs 8 \
    --folds 4 --fold "$1" --seed "$1" --split-seed 0 --threads 1 --out "$RUNS/lite0_cv4_f$1"
}
mkdir -p "$RUNS"
(fold 0 && fold 2) > "$RUNS/folds_0_2.log" 2>&1 &
first=$!
(fold 1 && fold 3) > "$RUNS/folds_1_3.log" 2>&1 &
second=$!
failed=0
wait "$first" || failed=1
wait "$second" || failed=1
if [ "$failed" -ne 0 ]; then echo "a fold failed: see $RUNS/folds_*.log" >&2; exit 1; fi
"$PY" -m core.ensemble --members "$RUNS"/lite0_cv4_f0 "$RUNS"/lite0_cv4_f1 "$RUNS"/lite0_cv4_f2 "$RUNS"/lite0_cv4_f3 \
  --out "weights/$NAME"
"$PY" -m core.evaluate --mura-root "$MURA_ROOT" --split valid --model "$NAME"
