#!/bin/sh
# GPU figures for the README in one call on a borrowed GPU machine (it cannot reach ../shared or PyPI).
#
#   sh bench/gpu_bench.sh prepare     # here, once: packs what travels into .gpu/ (git-ignored)
#   sh bench/gpu_bench.sh [run] [--sweep-limit N]   # there, in one call with carry [".gpu"];
#                                     # figures in $OUT/gpu_bench.txt
#
# prepare writes .gpu/mura (MURA valid/ humerus + forearm as WebP, about 6 MB: MURA pixels, never
# commit them), .gpu/fracatlas (the 376 outlined upper-limb FracAtlas images with labels.csv and the
# outlines, CC BY 4.0, about 7 MB) and .gpu/whl (pure-Python wheels of the project's requirements that
# the GPU image lacks). With the tracked tree (about 44 MB) it stays inside the tool's 64 MiB.
# The run prints bench/bench_gpu.py's figures: images/s at fp32, bf16 and fp16 with their probability
# gaps, and the localisation sweep's wall time. Ray is not carried (its wheel alone is over the limit):
# on a GPU machine the single process with DataLoader workers is what feeds the one GPU.
set -eu
cd "$(dirname "$0")/.."

if [ "${1:-run}" = prepare ]; then
    PY=${PY:-.venv/bin/python}
    SHARED=${SHARED:-../shared}
    rm -rf .gpu && mkdir -p .gpu/whl .gpu/fracatlas/images
    $PY scripts/pack_mura.py --mura-root "$SHARED/mura/MURA-v1.1" --out .gpu/mura --split valid
    cp "$SHARED/fracatlas/labels.csv" "$SHARED/fracatlas/fractures_coco.json" .gpu/fracatlas/
    PYTHONPATH=. $PY -c "
import shutil, sys
from pathlib import Path
from core.data import fracatlas
from core.eval.localization_sweep import fractured_images
root = Path(sys.argv[1])
for f in fractured_images(root)[0]['file']:
    shutil.copyfile(fracatlas.image_file(root, f), fracatlas.image_file(Path('.gpu/fracatlas'), f))
" "$SHARED/fracatlas"
    $PY -m pip wheel -q --no-deps -w .gpu/whl grad-cam==1.5.7 ttach==0.0.3 pydicom==3.0.2 \
        efficientnet-lite-pytorch==0.1.0
    du -sh .gpu
    exit 0
fi

[ "${1:-}" = run ] && shift
test -d .gpu/whl || { echo "run 'sh bench/gpu_bench.sh prepare' here first, then carry .gpu" >&2; exit 2; }
OUT=${OUT:-/tmp/gpu_bench_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu_bench.txt"
python3 bench/bench_gpu.py --mura-root .gpu/mura --fracatlas-root .gpu/fracatlas --workers 8 "$@" 2>&1 \
    | grep -v -e 'Warning' -e 'warn(' | tee -a "$OUT/gpu_bench.txt"
