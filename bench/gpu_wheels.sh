#!/usr/bin/env bash
# Fills wheels/gpu with what bench/gpu_check.sh installs on a GPU machine that reaches no
# package registry: the project's requirements a CUDA jax image usually lacks (grain,
# tensorflow-datasets, ml_collections, array-record, tensorboardX, pycocotools) and
# their own requirements that such an image lacks too. Run it where pip reaches a
# registry, then copy the folder with the source tree (it is git-ignored):
#
#   bash bench/gpu_wheels.sh [FOLDER]     # default wheels/gpu
#
# PYTHON_VERSIONS (default "3.12 3.11") picks the interpreters the compiled wheels are
# for; the pure ones fit all. About 16 MB for two versions.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-${repo}/wheels/gpu}"
pythons="${PYTHON_VERSIONS:-3.12 3.11}"
pip=(python3 -m pip)
mkdir -p "${out}"

# One wheel per Python version (compiled extensions).
compiled=(grain==0.2.18 array-record==0.8.6 pycocotools==2.0.11 dm-tree==0.1.10)
# Python only: one wheel for every version.
pure=(
  tensorflow-datasets==4.9.10 ml_collections==1.1.0 tensorboardX==2.6.5
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 immutabledict==4.3.1
  simple-parsing==0.1.9 docstring-parser==0.18.0 termcolor==3.3.0 toml==0.10.2
  portpicker==1.6.0 importlib-resources==6.5.2
)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "${p}")
done

for version in ${pythons}; do
  "${pip[@]}" download -q --no-deps --only-binary=:all: --implementation cp \
    --python-version "${version}" "${platforms[@]}" -d "${out}" "${compiled[@]}"
done
"${pip[@]}" download -q --no-deps --only-binary=:all: -d "${out}" "${pure[@]}"
# Published as source only, pure Python: built here into a wheel.
"${pip[@]}" wheel -q --no-deps -w "${out}" promise==2.3
du -sh "${out}"
