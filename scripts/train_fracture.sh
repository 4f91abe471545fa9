#!/bin/sh
# The fracture-aware model's four branches (docs/experiments.md, "A fracture-aware second output"):
# one process per fold, one torch thread each, two folds at a time; each trains candidates J and G on
# the same batches. About 25 min per fold on one quiet core. Rerun after a stop: each fold resumes.
#   FRACATLAS_ROOT  the FracAtlas folder (required); RUNS  where the folds go (default runs/)
set -eu
cd "$(dirname "$0")/.."
: "${FRACATLAS_ROOT:?set FRACATLAS_ROOT to your FracAtlas folder}"
RUNS="${RUNS:-runs}"
PY="${PY:-.venv/bin/python}"
fold() {
  OMP_NUM_THREADS=1 "$PY" -m core.train_fracture --fracatlas "$FRACATLAS_ROOT" --fold "$1" --threads 1 \
    --out "$RUNS/fracture_f$1" > "$RUNS/fracture_f$1.log" 2>&1
}
mkdir -p "$RUNS"
[ "$#" -gt 0 ] || set -- 0 1 2 3
failed=0
while [ "$#" -gt 0 ]; do
  fold "$1" & first=$!; shift
  second=""
  if [ "$#" -gt 0 ]; then fold "$1" & second=$!; shift; fi
  wait "$first" || failed=1
  [ -z "$second" ] || wait "$second" || failed=1
done
if [ "$failed" -ne 0 ]; then echo "a fold failed: see $RUNS/fracture_f*.log" >&2; exit 1; fi
