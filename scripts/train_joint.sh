#!/bin/sh
# Issue 14, item 2: the shipped recipe (4-fold patient-level CV of MURA train/, one EfficientNet-Lite0
# per fold, same folds and seeds) trained jointly with FracAtlas's upper-limb fracture labels on a
# second output. About 1.5 times the shipped CV's images: about 110 minutes on 2 quiet CPU cores.
# The adoption rule is in docs/experiments.md; scripts/joint_outcome.py measures it.
#   MURA_ROOT, FRACATLAS_ROOT  the data folders (required); RUNS  where the members go (default runs/)
# One thread per fold, two folds at a time (see train_shipped.sh). Rerun after a stop: each fold resumes.
set -eu
cd "$(dirname "$0")/.."
: "${MURA_ROOT:?set MURA_ROOT to your MURA v1.1 folder}"
: "${FRACATLAS_ROOT:?set FRACATLAS_ROOT to your FracAtlas folder}"
RUNS="${RUNS:-runs}"
PY="${PY:-.venv/bin/python}"
# bf16 autocast is 3x faster where the CPU has AVX512-BF16 (the shipped CV's machine) and about 3.5x
# slower in training where it must be emulated (this project's current AMD EPYC): fp32 there.
if grep -q avx512_bf16 /proc/cpuinfo; then BF16=""; else BF16="--no-bf16"; fi
fold() {
  "$PY" -m core.train --mura-root "$MURA_ROOT" --fracatlas "$FRACATLAS_ROOT" --arch efficientnet_lite0 \
    --input-size 224 --epochs 8 --folds 4 --fold "$1" --seed "$1" --split-seed 0 --threads 1 --channels-last $BF16 \
    --out "$RUNS/joint_cv4_f$1"
}
mkdir -p "$RUNS"
# Folds to train (default all four), two at a time: `scripts/train_joint.sh 0 1` is the rule's stage 1.
[ "$#" -gt 0 ] || set -- 0 1 2 3
failed=0
while [ "$#" -gt 0 ]; do
  fold "$1" > "$RUNS/joint_fold_$1.log" 2>&1 & first=$!; shift
  second=""
  if [ "$#" -gt 0 ]; then fold "$1" > "$RUNS/joint_fold_$1.log" 2>&1 & second=$!; shift; fi
  wait "$first" || failed=1
  [ -z "$second" ] || wait "$second" || failed=1
done
if [ "$failed" -ne 0 ]; then echo "a fold failed: see $RUNS/joint_fold_*.log" >&2; exit 1; fi
