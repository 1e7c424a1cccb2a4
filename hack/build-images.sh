#!/usr/bin/env bash
# Build both Dockerfile targets without a Docker engine: buildah (chroot isolation; overlay storage, or vfs) from
# Debian bases made by mmdebstrap, installing from a local wheel folder instead of the indexes.
#
#   localhost/kubeinfer-operator:dev   localhost/kubeinfer-runtime:dev   (in the storage printed last)
#
# Cached under ${KUBEINFER_CACHE:-~/.cache/kubeinfer}/images: the base (per Debian suite and package
# list), the wheels (per requirement list) and each image's dependency stage (per Dockerfile,
# requirements and base), so a warm build redoes only the small layer with the project's wheel.
# Needs root (apt-get installs buildah and mmdebstrap when missing). Prints one line per image:
# `image <name> <size>`, then `storage <buildah --root> <driver>`. KUBEINFER_IMAGE_STORAGE_DRIVER=vfs|overlay
# overrides the driver, which is otherwise overlay where an overlay mount works.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/versions.env

cache="${KUBEINFER_CACHE:-${HOME}/.cache/kubeinfer}"
images="${cache}/images"
mkdir -p "${images}"

# overlay where the kernel mounts it (a working container and a commit then cost a diff); vfs, which copies
# every layer whole (minutes for the runtime's 5 GB of CUDA wheels), where it does not.
storage_driver() {
  local probe driver=vfs
  probe="$(mktemp -d)"
  mkdir -p "${probe}"/{lower,upper,work,merged}
  if mount -t overlay overlay -o "lowerdir=${probe}/lower,upperdir=${probe}/upper,workdir=${probe}/work" \
    "${probe}/merged" 2>/dev/null; then
    umount "${probe}/merged"
    driver=overlay
  fi
  rm -rf "${probe}"
  echo "${driver}"
}
driver="${KUBEINFER_IMAGE_STORAGE_DRIVER:-$(storage_driver)}"
# One storage in the cache: the other driver's (and the unversioned one of earlier builds) goes.
for other in "${images}/storage" "${images}/run" "${images}/vfs" "${images}/overlay"; do
  [[ -e "${other}" && "${other}" != "${images}/${driver}" ]] || continue
  findmnt -rn -o TARGET | grep "^${other}/" | sort -r | xargs -r umount -l || true
  rm -rf "${other}"
done
export STORAGE_DRIVER="${driver}" BUILDAH_ISOLATION=chroot
storage=(--root "${images}/${driver}/storage" --runroot "${images}/${driver}/run" --storage-driver "${driver}")
base_packages="python3,python3-venv,python-is-python3,ca-certificates,passwd"

need() {
  local missing=()
  for tool in buildah mmdebstrap; do command -v "${tool}" >/dev/null || missing+=("${tool}"); done
  ((${#missing[@]} == 0)) && return
  echo "build-images: installing ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

key() { sha256sum | cut -c1-16; }
exists() { buildah "${storage[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# Remove every other tag of the repository `$1` (an earlier key), so the cache holds one of each.
keep_only() {
  local repo="$1" keep="$2"
  buildah "${storage[@]}" images --format '{{.Name}}:{{.Tag}}' | grep "^${repo}:" | grep -vx "${repo}:${keep}" |
    xargs -r buildah "${storage[@]}" rmi -f >/dev/null 2>&1 || true
}

base_image() {
  local tag
  tag="$(printf '%s %s' "${DEBIAN_SUITE}" "${base_packages}" | key)"
  local image="localhost/kubeinfer-base:${tag}"
  if ! exists "${image}"; then
    echo "build-images: base ${DEBIAN_SUITE} (${base_packages})" >&2
    local tar="${images}/base.tar"
    mmdebstrap --quiet --variant=minbase --include="${base_packages}" \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' "${DEBIAN_SUITE}" "${tar}"
    local ctr
    ctr="$(buildah "${storage[@]}" from scratch)"
    buildah "${storage[@]}" add --quiet "${ctr}" "${tar}" /
    buildah "${storage[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --cmd /bin/bash "${ctr}"
    buildah "${storage[@]}" commit --quiet "${ctr}" "${image}" >/dev/null
    buildah "${storage[@]}" rm "${ctr}" >/dev/null
    rm -f "${tar}"
    keep_only localhost/kubeinfer-base "${tag}"
  fi
  echo "${image}"
}

# Every wheel both images install (and setuptools, to build the project's own): downloaded once per
# requirement list, for the base's Python.
wheel_dir() {
  local requirements
  requirements="$(python3 hack/image-requirements.py pyproject.toml operator runtime gcs azure; echo 'setuptools>=69')"
  local dir
  dir="${cache}/wheels/$(printf '%s' "${requirements}" | key)"
  if [[ ! -f "${dir}/.complete" ]]; then
    echo "build-images: downloading wheels to ${dir}" >&2
    rm -rf "${cache}/wheels" && mkdir -p "${dir}"
    printf '%s\n' "${requirements}" >"${dir}/requirements.txt"
    python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: --python-version 3.11 \
      --dest "${dir}" -r "${dir}/requirements.txt"
    touch "${dir}/.complete"
  fi
  echo "${dir}"
}

build() {  # build <target> <tag> [buildah args...]
  local target="$1" tag="$2"
  shift 2
  buildah "${storage[@]}" bud --quiet --pull=never --target "${target}" --tag "${tag}" \
    --volume "${wheels}:/wheels:ro" --build-arg PIP_OPTIONS="--no-index --find-links /wheels" \
    --build-arg PYTHON_IMAGE="${base}" --build-arg CUDA_IMAGE="${base}" "$@" . >/dev/null
}

need
base="$(base_image)"
wheels="$(wheel_dir)"
# The dependency stages change with the Dockerfile and the requirement lists (the wheel folder's name), not
# with the rest of pyproject.toml.
deps_key="$( (cat Dockerfile hack/image-requirements.py; echo "${base}" "${wheels}") | key)"
for name in operator runtime; do
  deps="localhost/kubeinfer-${name}-deps:${deps_key}"
  if ! exists "${deps}"; then
    echo "build-images: ${name} dependencies" >&2
    build "${name}-deps" "${deps}"
    keep_only "localhost/kubeinfer-${name}-deps" "${deps_key}"
  fi
  upper="$(tr '[:lower:]' '[:upper:]' <<<"${name}")"
  echo "build-images: ${name}" >&2
  build "${name}" "localhost/kubeinfer-${name}:dev" --build-arg "${upper}_DEPS=${deps}"
done
buildah "${storage[@]}" rm --all >/dev/null
buildah "${storage[@]}" rmi --prune >/dev/null 2>&1 || true
for name in operator runtime; do
  echo "image localhost/kubeinfer-${name}:dev $(buildah "${storage[@]}" images --format '{{.Size}}' \
    "localhost/kubeinfer-${name}:dev" | tr -d ' ')"
done
echo "storage ${images}/${driver}/storage ${driver}"
