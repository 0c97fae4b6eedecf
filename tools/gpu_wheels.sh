#!/usr/bin/env bash
# Downloads (or builds) into .whl/ the wheels that tools/gpu_check.py needs on a GPU
# machine with no network (docs/gpu.md, "The GPU check"), for CPython 3.12, manylinux
# x86_64. Such a machine's image holds torch, torchvision, timm, torch-geometric and
# pytest, and what importing mmcvig and mmdet.models needs besides (checked by hiding
# each): opencv, matplotlib and scipy (too large to travel: about 90 MiB together),
# rich, six, einops, markdown, pyyaml and numpy. A machine without the small ones: name
# them as extra arguments, e.g. rich==15.0.0 (and its needs).
#
#   bash tools/gpu_wheels.sh                  # -> .whl/ (git-ignored)
#   bash tools/gpu_wheels.sh /tmp/whl         # another folder
#   GPU_WHEELS_PYTHON=3.11 bash tools/gpu_wheels.sh /tmp/whl311   # another CPython
#
# What travels, at the versions of requirements/constraints.txt, each for a reason:
# * mmengine, mmdet, mmpretrain: pure Python;
# * mmcv-lite at mmcv's version: mmcv without its compiled ops (nothing to compile, no
#   torch ABI to match); the GPU check copes with the missing ops (see its docstring);
# * what importing mmcvig, mmdet.models and mmpretrain.models needs and such an image
#   lacks: addict, yapf (+ platformdirs), termcolor, terminaltables, pycocotools and
#   shapely (compiled, cp312 wheels), model-index (+ ordered-set), importlib_metadata
#   (+ lazy-importer);
# * setuptools: mmengine resolves `mmdet::` configs through pkg_resources, which
#   setuptools >= 82 no longer ships.
# Extra NAME==VERSION arguments after the folder are fetched too. The folder is emptied
# first: pip refuses two versions of one package in one install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/.whl}"
shift || true
PY="${PYTHON:-python3}"
PY_VERSION="${GPU_WHEELS_PYTHON:-3.12}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
# The project's limit on what travels with a device call is 64 MiB, the tree included.
MAX_MIB="${GPU_WHEELS_MAX_MIB:-40}"

log() { printf '[gpu_wheels %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

pin() {  # version pinned for package $1 in the constraints file
    local version
    version="$(sed -n "s/^$1==\(.*\)$/\1/Ip" "$CONSTRAINTS")"
    [[ -n "$version" ]] || { log "no pin for $1 in $CONSTRAINTS"; exit 1; }
    echo "$version"
}

PACKAGES=(
    "mmengine==$(pin mmengine)" "mmcv-lite==$(pin mmcv)" "mmdet==$(pin mmdet)"
    "mmpretrain==$(pin mmpretrain)"
    "addict==$(pin addict)" "yapf==$(pin yapf)" "platformdirs==$(pin platformdirs)"
    "termcolor==$(pin termcolor)" "terminaltables==$(pin terminaltables)"
    "pycocotools==$(pin pycocotools)" "shapely==$(pin shapely)"
    "model-index==$(pin model-index)" "ordered-set==$(pin ordered-set)"
    "importlib_metadata==$(pin importlib_metadata)" "lazy-importer==$(pin lazy-importer)"
    "setuptools==$(pin setuptools)"
    "$@"
)
PLATFORMS=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    PLATFORMS+=(--platform "${tag}_x86_64")
done

mkdir -p "$OUT"
rm -f "$OUT"/*.whl
for spec in "${PACKAGES[@]}"; do
    # A wheel for that CPython and platform; else (a pure-Python package published as
    # an sdist only) one built here, which then fits any platform.
    if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps \
            --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
            "${PLATFORMS[@]}" -d "$OUT" "$spec" 2>/dev/null; then
        log "$spec: no wheel for CPython $PY_VERSION, building one from its sdist"
        "$PY" -m pip wheel -q --disable-pip-version-check --no-deps --no-binary=:all: \
            -w "$OUT" "$spec"
    fi
done

find "$OUT" -maxdepth 1 -type f ! -name '*.whl' -delete
ls -1 "$OUT"
size_kib="$(du -sk "$OUT" | cut -f1)"
log "$(ls "$OUT"/*.whl | wc -l) wheels, $((size_kib / 1024)) MiB in $OUT"
if ((size_kib > MAX_MIB * 1024)); then
    log "more than $MAX_MIB MiB: too large to travel with the working tree"
    exit 1
fi
