#!/usr/bin/env bash
# The segmentation demo (`make demo-seg`): a ClusterViG Semantic FPN trained from scratch
# and evaluated with mmseg's IoUMetric, on the CPU, in a few minutes. No data set or
# weights can be downloaded here, so it
#   1. draws the toy segmentation set into data/toy_seg/ (kept when already there),
#   2. trains configs/toy/fpn_cvig-mini_toy-seg.py with tools/train.py,
#   3. evaluates the last checkpoint with tools/test.py and prints mIoU, mAcc and aAcc.
# Everything lands in work_dirs/fpn_cvig-mini_toy-seg/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
CONFIG=configs/toy/fpn_cvig-mini_toy-seg.py
WORK_DIR=work_dirs/fpn_cvig-mini_toy-seg
cd "$ROOT"

# One torch thread unless told otherwise: on a 2-core machine that other jobs share,
# two OpenMP threads spin-wait for each other (see tools/demo.sh).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

start=$SECONDS
echo "[demo-seg] 1/3 toy segmentation set"
"$PYTHON" tools/misc/make_toy_seg.py --out data/toy_seg
data_end=$SECONDS

echo "[demo-seg] 2/3 training $CONFIG"
"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
train_end=$SECONDS

echo "[demo-seg] 3/3 testing the last checkpoint"
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
# IoUMetric reports percentages; the per-class table is in the test log above.
print(f'\n[demo-seg] IoUMetric of {checkpoint} on the toy val split ({metrics_file}):')
print('  ' + '  '.join(f'{key} {metrics[key]:.2f}' for key in ('mIoU', 'mAcc', 'aAcc')))
PY
echo "[demo-seg] done in $((SECONDS - start)) s: data $((data_end - start)) s, training" \
     "$((train_end - data_end)) s, testing $((SECONDS - train_end)) s" \
     "(OMP_NUM_THREADS=$OMP_NUM_THREADS)"
