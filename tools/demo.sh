#!/usr/bin/env bash
# The demos of `make demo` (TASK det, the default) and `make demo-seg` (TASK seg): a
# ClusterViG trained from scratch and evaluated on the CPU in a few minutes. No data set
# or weights can be downloaded here, so each
#   1. draws its toy data set (kept when already there): data/toy_coco/ for det,
#      data/toy_seg/ for seg,
#   2. trains its config with tools/train.py: configs/toy/mask-rcnn_cvig-mini_fpn_toy.py
#      (Mask R-CNN) for det, configs/toy/fpn_cvig-mini_toy-seg.py (Semantic FPN) for seg,
#   3. evaluates the last checkpoint with tools/test.py and prints COCO box and mask AP
#      (mmdet's CocoMetric) or mIoU, mAcc and aAcc (mmseg's IoUMetric).
# Everything lands in work_dirs/<config name>/.
#
# Usage: bash tools/demo.sh [det|seg]. Overridable: PYTHON (default .venv/bin/python),
# OMP_NUM_THREADS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
TASK="${1:-det}"
case "$TASK" in
  det) TAG=demo; MAKE_DATA=(tools/misc/make_toy_coco.py --out data/toy_coco)
       CONFIG=configs/toy/mask-rcnn_cvig-mini_fpn_toy.py ;;
  seg) TAG=demo-seg; MAKE_DATA=(tools/misc/make_toy_seg.py --out data/toy_seg)
       CONFIG=configs/toy/fpn_cvig-mini_toy-seg.py ;;
  *) echo "tools/demo.sh: unknown task '$TASK' (expected det or seg)" >&2; exit 2 ;;
esac
WORK_DIR="work_dirs/$(basename "$CONFIG" .py)"
cd "$ROOT"

# One torch thread unless told otherwise: on a 2-core machine that other jobs share, two
# OpenMP threads spin-wait for each other (a training step went from 1.4 s to 10.8 s);
# set OMP_NUM_THREADS=2 on an idle machine.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

start=$SECONDS
echo "[$TAG] 1/3 toy data set"
"$PYTHON" "${MAKE_DATA[@]}"
data_end=$SECONDS

echo "[$TAG] 2/3 training $CONFIG"
"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
train_end=$SECONDS

echo "[$TAG] 3/3 testing the last checkpoint"
checkpoint="$(cat "$WORK_DIR/last_checkpoint")"
"$PYTHON" tools/test.py "$CONFIG" "$checkpoint" --work-dir "$WORK_DIR/test"

# tools/test.py writes the metrics of each run to test/<timestamp>/<timestamp>.json.
metrics="$(ls -t "$WORK_DIR"/test/*/*.json | head -n 1)"
"$PYTHON" - "$TASK" "$TAG" "$metrics" "$checkpoint" <<'PY'
import json
import sys

task, tag, metrics_file, checkpoint = sys.argv[1:]
with open(metrics_file) as f:
    metrics = json.load(f)
if task == 'det':
    print(f'\n[{tag}] COCO metrics of {checkpoint} on the toy val split ({metrics_file}):')
    for kind in ('bbox', 'segm'):
        values = '  '.join(f'AP{s or ""} {metrics[f"coco/{kind}_mAP{s}"]:.3f}'
                           for s in ('', '_50', '_75', '_s', '_m', '_l'))
        print(f'  {kind:5s} {values}')
else:
    # IoUMetric reports percentages; the per-class table is in the test log above.
    print(f'\n[{tag}] IoUMetric of {checkpoint} on the toy val split ({metrics_file}):')
    print('  ' + '  '.join(f'{key} {metrics[key]:.2f}' for key in ('mIoU', 'mAcc', 'aAcc')))
PY
echo "[$TAG] done in $((SECONDS - start)) s: data $((data_end - start)) s, training" \
     "$((train_end - data_end)) s, testing $((SECONDS - train_end)) s" \
     "(OMP_NUM_THREADS=$OMP_NUM_THREADS)"
