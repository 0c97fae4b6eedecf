#!/usr/bin/env bash
# Creates (or refreshes) the project's virtualenv in .venv/ with the pinned OpenMMLab stack.
#
# Idempotent: when nothing that decides the environment has changed since the last
# successful run (a hash of this script, requirements/ and setup.py), it returns at once.
# The slow part, compiling mmcv's ops and torch-scatter against the installed torch, is
# cached as wheels in $MMCVIG_WHEEL_CACHE/<key>, where <key> names the torch version, its
# CUDA build and whether CUDA kernels were compiled, so a different torch never picks up
# a stale wheel (pip's own cache keys on the sdist only; ENVIRONMENT.md trap 5).
#
# GPU machines: CUDA kernels are compiled when a GPU is visible or FORCE_CUDA=1 is set;
# TORCH_CUDA_ARCH_LIST (e.g. "9.0" for H100) is honoured and becomes part of the key.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMCVIG_VENV:-$ROOT/.venv}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
CACHE_ROOT="${MMCVIG_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmcvig/wheels}"
STAMP="$VENV/.mmcvig-setup-stamp"

log() { printf '[setup_env %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

pin() {  # version pinned for package $1 in the constraints file
    sed -n "s/^$1==\(.*\)$/\1/p" "$CONSTRAINTS"
}

fingerprint() {
    cat "$0" "$ROOT"/requirements/*.txt "$ROOT/setup.py" | sha256sum | cut -d' ' -f1
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(fingerprint)" ]]; then
    log "environment up to date ($VENV)"
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; python3 -m venv "$VENV"; }
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q -c "$CONSTRAINTS")

log "base: setuptools, numpy, wheel"
"${PIP[@]}" setuptools numpy wheel ninja
log "torch $(pin torch) + torchvision $(pin torchvision)"
"${PIP[@]}" torch torchvision

if [[ -z "${FORCE_CUDA:-}" ]]; then
    FORCE_CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')
fi
export FORCE_CUDA
TORCH_TAG=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0] + "-cuda" + str(torch.version.cuda))')
if [[ "$FORCE_CUDA" == "1" ]]; then
    KERNELS="gpu-${TORCH_CUDA_ARCH_LIST:-native}"
    KERNELS="${KERNELS// /_}"
else
    KERNELS="cpu"
fi
WHEELS="$CACHE_ROOT/torch-$TORCH_TAG-$KERNELS"
mkdir -p "$WHEELS"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

# build_wheel NAME PATCH_CMD: build NAME (pinned) from its sdist against the installed
# torch into $WHEELS, unless a wheel of that version is already there.
build_wheel() {
    local name="$1" patch="$2" version src
    version="$(pin "$name")"
    if compgen -G "$WHEELS/${name//-/_}-$version-*.whl" >/dev/null; then
        log "$name $version: cached wheel in $WHEELS"
        return
    fi
    log "$name $version: building from sdist against torch $TORCH_TAG ($KERNELS kernels)"
    src="$(mktemp -d)"
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$src" "$name==$version"
    tar -xzf "$src"/*.tar.gz -C "$src"
    (cd "$src/${name//-/_}-$version" 2>/dev/null || cd "$src/$name-$version"
     eval "$patch"
     "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$WHEELS" .)
    rm -rf "$src"
}

# torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes c++17 (ENVIRONMENT.md trap 4).
MMCV_WITH_OPS=1 build_wheel mmcv "sed -i 's/-std=c++17/-std=c++20/g' setup.py"
build_wheel torch-scatter ":"
log "installing compiled wheels"
"${PIP[@]}" "$WHEELS"/mmcv-*.whl "$WHEELS"/torch_scatter-*.whl

log "OpenMMLab stack, PyG, test tools"
"${PIP[@]}" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"
log "mmcvig (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

# mmseg.models: mmsegmentation imports packages it does not declare (ftfy, regex).
"$PY" -c "import mmcv.ops, mmdet, mmpretrain.models, mmseg.models, torch_geometric, \
    torch_scatter, mmcvig"
fingerprint > "$STAMP"
log "environment ready ($VENV)"
