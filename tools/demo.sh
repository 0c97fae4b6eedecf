#!/usr/bin/env bash
# The demo (`make demo`): a ClusterViG Mask R-CNN trained from scratch and evaluated with
# COCO box and mask AP, on the CPU, in a few minutes. No data set or weights can be
# downloaded here, so it
#   1. draws the toy COCO data set into data/toy_coco/ (kept when already there),
#   2. trains configs/toy/mask-rcnn_cvig-mini_fpn_toy.py with tools/train.py,
#   3. evaluates the last checkpoint with tools/test.py (mmdet's CocoMetric).
# Everything lands in work_dirs/mask-rcnn_cvig-mini_fpn_toy/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
CONFIG=configs/toy/mask-rcnn_cvig-mini_fpn_toy.py
WORK_DIR=work_dirs/mask-rcnn_cvig-mini_fpn_toy
cd "$ROOT"

# One torch thread unless told otherwise: on a 2-core machine that other jobs share, two
# OpenMP threads spin-wait for each other (a training step went from 1.4 s to 10.8 s);
# set OMP_NUM_THREADS=2 on an idle machine.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

start=$SECONDS
echo "[demo] 1/3 toy data set"
"$PYTHON" tools/misc/make_toy_coco.py --out data/toy_coco
data_end=$SECONDS

echo "[demo] 2/3 training $CONFIG"
"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
train_end=$SECONDS

echo "[demo] 3/3 testing the last checkpoint"
checkpoint="$(cat "$WORK_DIR/last_checkpoint")"
"$PYTHON" tools/test.py "$CONFIG" "$checkpoint" --work-dir "$WORK_DIR/test"

# tools/test.py writes the metrics of each run to test/<timestamp>/<timestamp>.json.
metrics="$(ls -t "$WORK_DIR"/test/*/*.json | head -n 1)"
"$PYTHON" - "$metrics" "$checkpoint" <<'PY'
import json
import sys

metrics_file, checkpoint = sys.argv[1:]
with open(metrics_file) as f:
    metrics = json.load(f)
print(f'\n[demo] COCO metrics of {checkpoint} on the toy val split ({metrics_file}):')
for task in ('bbox', 'segm'):
    values = '  '.join(f'AP{s or ""} {metrics[f"coco/{task}_mAP{s}"]:.3f}'
                       for s in ('', '_50', '_75', '_s', '_m', '_l'))
    print(f'  {task:5s} {values}')
PY
echo "[demo] done in $((SECONDS - start)) s: data $((data_end - start)) s, training" \
     "$((train_end - data_end)) s, testing $((SECONDS - train_end)) s" \
     "(OMP_NUM_THREADS=$OMP_NUM_THREADS)"
