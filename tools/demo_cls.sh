#!/usr/bin/env bash
# Embedded classification run, with and without distillation: write the toy dataset
# (data/toy_cls); train a small ResNet-18 teacher on it; train a small ClusterViG from
# scratch on the labels only, then the same ClusterViG distilled from the teacher
# (DeiT-style hard distillation); evaluate the last checkpoint of each on the held-out
# test split with tools/test.py; print the three top-1 accuracies and the time taken.
#
# Overridable: PYTHON (default .venv/bin/python), WORK_DIR (parent of the three work
# dirs), OMP_NUM_THREADS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
WORK_DIR="${WORK_DIR:-work_dirs}"
# One intra-op thread by default: on a small machine shared with other jobs, torch's
# OpenMP threads wait on each other and a training step of this model ran ~8x slower
# with 2 threads than with 1 (measured on 2 busy cores).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

cd "$ROOT"
start=$SECONDS
"$PYTHON" tools/misc/make_toy_classification.py --out data/toy_cls

RESULTS=()
# train_and_test NAME CONFIG [--cfg-options ...]: train, then test the last checkpoint.
train_and_test() {
  local name=$1 config=$2 work="$WORK_DIR/$1"
  shift 2
  local t0=$SECONDS
  "$PYTHON" tools/train.py "$config" --work-dir "$work" "$@"
  local checkpoint
  checkpoint="$(cat "$work/last_checkpoint")"
  "$PYTHON" tools/test.py "$config" "$checkpoint" --work-dir "$work/test" "$@"
  RESULTS+=("$name" "$work/test" "$((SECONDS - t0))")
}

train_and_test resnet18-mini_toy-cls configs/toy/resnet18-mini_toy-cls.py
teacher="$(cat "$WORK_DIR/resnet18-mini_toy-cls/last_checkpoint")"
train_and_test cvig-mini_toy-cls configs/toy/cvig-mini_toy-cls.py
train_and_test cvig-mini_toy-cls_distill configs/toy/cvig-mini_toy-cls_distill.py \
  --cfg-options model.teacher_ckpt="$teacher"

# tools/test.py writes its metrics to <work-dir>/<timestamp>/<timestamp>.json.
"$PYTHON" - "$((SECONDS - start))" "${RESULTS[@]}" <<'PY'
import glob
import json
import os
import sys

total, results = sys.argv[1], sys.argv[2:]
labels = {'resnet18-mini_toy-cls': 'teacher ResNet-18 (16 wide)',
          'cvig-mini_toy-cls': 'ClusterViG, labels only',
          'cvig-mini_toy-cls_distill': 'ClusterViG, distilled'}
print('toy classification, test split (360 images, 6 classes, chance 16.67 %):')
for name, work_dir, seconds in zip(results[::3], results[1::3], results[2::3]):
    metrics_file = max(glob.glob(os.path.join(work_dir, '*', '*.json')),
                       key=os.path.getmtime)
    with open(metrics_file) as f:
        top1 = json.load(f)['accuracy/top1']
    print(f'  {labels[name]:28s} top-1 {top1:6.2f} %   ({seconds} s train + test)')
print(f'total {total} s')
PY
