#!/usr/bin/env bash
# `make venv`: .venv with the project (editable) and its operator, runtime and dev extras, compiled.
#
# Compiling the 60,000 files of torch, transformers and diffusers is most of a warm venv's 20 s, and CI
# makes a new .venv in every fresh clone. So the first run builds a relocatable template in the cache,
# keyed by what decides its contents; later runs hard-link it (about a second) and install only the
# project, editable, into the copy. Python checks each .pyc against its source's mtime and size, which a
# hard link shares, and rewrites the code objects' file names to the path it imports from. Where the cache
# is on another file system than the clone, the venv is installed in place as before.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${KUBEINFER_CACHE:-${HOME}/.cache/kubeinfer}"
export UV_CACHE_DIR="${UV_CACHE_DIR:-${cache}/uv}" UV_LINK_MODE="${UV_LINK_MODE:-hardlink}"
venv=.venv
command -v uv >/dev/null || python3 -m pip install -q uv

# Without an NVIDIA device, triton (CUDA kernels only; CPU torch.compile does not use it) is left out:
# diffusers imports torch._dynamo, which loads triton when present, 0.45 CPU-s in every rank the tests start.
gpu_less=1
[[ -e /dev/nvidiactl ]] && gpu_less=""
excludes=()
[[ -n "${gpu_less}" ]] && excludes=(--excludes hack/gpu-only-packages.txt)

install() {  # $1: the venv to create or update
  uv venv -q --allow-existing --relocatable -p python3.11 "$1"
  uv pip install -q --compile-bytecode --python "$1/bin/python" "${excludes[@]}" -e '.[operator,runtime,dev]'
  if [[ -n "${gpu_less}" ]]; then uv pip uninstall -q --python "$1/bin/python" -r hack/gpu-only-packages.txt; fi
}

key="$( (cat pyproject.toml hack/gpu-only-packages.txt; echo "gpu-less=${gpu_less}"; uv --version
         python3.11 -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
templates="${cache}/venvs"
template="${templates}/${key}"
mkdir -p "${templates}"
if [[ "$(stat -c %d "${templates}")" != "$(stat -c %d .)" ]]; then
  install "${venv}"
  exit 0
fi
if [[ ! -d "${template}" ]]; then
  building="$(mktemp -d "${templates}/.build-XXXXXX")"
  install "${building}"
  # Another run may have finished the same template meanwhile: either copy is good.
  mv -T "${building}" "${template}" 2>/dev/null || rm -rf "${building}"
  find "${templates}" -mindepth 1 -maxdepth 1 -not -name "${key}" -not -name '.build-*' -exec rm -rf {} +
fi
rm -rf "${venv}"
cp -al "${template}" "${venv}"
# The template's editable install points at the clone that built it: point this one at this clone.
uv pip install -q --compile-bytecode --python "${venv}/bin/python" --no-deps --reinstall-package kubeinfer -e .
