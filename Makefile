# Entry points of the project: `make demo` and `make test` (and `make lint`, which CI runs
# first). All first run `make env`, which builds .venv/ with the pinned OpenMMLab stack
# (tools/setup_env.sh; it returns at once when the environment is already up to date).
#
# Overridable: VENV (where the environment lives), PYTHON (the interpreter that runs the
# demo and the tests, by default the one in VENV), PYTEST_ARGS (extra pytest arguments).
VENV ?= $(CURDIR)/.venv
PYTHON ?= $(VENV)/bin/python
PYTEST_ARGS ?=
# What flake8 and isort check, with the settings of setup.cfg.
LINT_PATHS = mmcvig tools tests configs setup.py

.PHONY: env test lint demo demo-cls demo-seg gpu-check gpu-wheels clean

env:
	MMCVIG_VENV="$(VENV)" bash tools/setup_env.sh

# Then the CUDA tests once more on the CPU (MMCVIG_TEST_DEVICE=cpu, about 10 s): without a
# GPU the first run skips them, and the GPU check (below) must find them working.
test: env
	"$(PYTHON)" -m pytest tests -q -p no:cacheprovider --timeout=900 $(PYTEST_ARGS)
	MMCVIG_TEST_DEVICE=cpu "$(PYTHON)" -m pytest tests/test_cuda.py -q -p no:cacheprovider \
		--timeout=900 $(PYTEST_ARGS)

# flake8 and isort as OpenMMLab projects run them, then one copy of every document
# (tools/misc/check_docs.py). Every step runs, so that one run lists all the problems.
lint: env
	status=0; \
	"$(PYTHON)" -m flake8 $(LINT_PATHS) || status=1; \
	"$(PYTHON)" -m isort --check-only --diff $(LINT_PATHS) || status=1; \
	"$(PYTHON)" tools/misc/check_docs.py || status=1; \
	exit $$status

demo: env
	PYTHON="$(PYTHON)" bash tools/demo.sh

# The classification counterpart of the demo (toy data set, train, test, top-1).
demo-cls: env
	PYTHON="$(PYTHON)" bash tools/demo_cls.sh

# The semantic segmentation counterpart (toy scenes, Semantic FPN, mIoU).
demo-seg: env
	PYTHON="$(PYTHON)" bash tools/demo.sh seg

# The GPU check (docs/gpu.md): CUDA tests, Table VI throughput and the detection-scale
# cost on one GPU in at most 8 minutes; gpu_check.json and gpu_check.md go to OUT (an
# OUT in the environment counts too). It builds no .venv/ (no network there): it runs
# .venv's interpreter where there is one, else python3 (the machine's torch, with the
# wheels of `make gpu-wheels` on PYTHONPATH). GPU_CHECK_ARGS: more arguments, e.g.
# --dry-run (a CPU run at tiny sizes) or --budget-s 300.
OUT ?= work_dirs/gpu_check
GPU_CHECK_PYTHON ?= $(if $(wildcard $(PYTHON)),$(PYTHON),python3)
GPU_CHECK_ARGS ?=
gpu-check:
	"$(GPU_CHECK_PYTHON)" tools/gpu_check.py --out-dir "$(OUT)" $(GPU_CHECK_ARGS)

# The wheels that travel to a GPU machine without network, into .whl/ (git-ignored).
gpu-wheels:
	bash tools/gpu_wheels.sh

# Leaves .venv/ alone: rebuilding it compiles mmcv (minutes). `rm -rf .venv` for that.
clean:
	rm -rf work_dirs build dist .pytest_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
