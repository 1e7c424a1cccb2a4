#!/usr/bin/env bash
# Build the pinned upstream binaries of the local test cluster from the Go module proxy.
#
# Unattended and idempotent: a binary that already exists in the cache is not rebuilt, so only the
# first run on a machine pays for the build. Versions come from hack/versions.env; each component
# is built through a wrapper module under hack/gobuild/<component>/ whose go.sum is committed.
#
#   hack/build-tools.sh              build whatever is missing
#   hack/build-tools.sh --print-env  print KEY=PATH of every binary (builds nothing)
#   hack/build-tools.sh --sync       rewrite the wrapper go.mod files from versions.env, then build
#   hack/build-tools.sh etcd helm    build only the named components
#   hack/build-tools.sh jobset       build the JobSet controller (only on request: the benchmarks)
#
# Components: kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl),
# etcd, helm, minio, kueue (the Kueue manager: its e2e tests need it; ~5 min cold on 2 cores);
# on request jobset (jobset-controller). Environment: KUBEINFER_CACHE (default ~/.cache/kubeinfer).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${HACK_DIR}/versions.env"

CACHE="${KUBEINFER_CACHE:-${HOME}/.cache/kubeinfer}"
BIN_ROOT="${CACHE}/bin"
export GOMODCACHE="${CACHE}/go/mod" GOCACHE="${CACHE}/go/build" CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
COMPONENTS=(kubernetes etcd helm minio kueue)
# Built only when named: the scale benchmark needs them, `make test` and CI do not.
ON_REQUEST=(jobset)
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
# Staging modules k8s.io/kubernetes requires at v0.0.0; each is replaced by its published release.
KUBE_STAGING=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
  cloud-provider cluster-bootstrap code-generator component-base component-helpers
  controller-manager cri-api cri-client cri-streaming csi-translation-lib
  dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
  kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils
  pod-security-admission sample-apiserver streaming)

log() { printf '[build-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# version_of NAME -> the pinned version of the binary NAME.
version_of() {
  case "$1" in
    kube-* | kubectl) echo "${KUBERNETES_VERSION}" ;;
    etcd) echo "${ETCD_VERSION}" ;;
    helm) echo "${HELM_VERSION}" ;;
    minio) echo "${MINIO_VERSION}" ;;
    jobset-controller) echo "${JOBSET_VERSION}" ;;
    kueue) echo "${KUEUE_VERSION}" ;;
    *) die "unknown binary $1" ;;
  esac
}

bin_path() { echo "${BIN_ROOT}/$1-$(version_of "$1")/$1"; }

binaries_of() {
  case "$1" in
    kubernetes) echo "${KUBE_CMDS[@]}" ;;
    etcd | helm | minio | kueue) echo "$1" ;;
    jobset) echo "jobset-controller" ;;
    *) die "unknown component '$1' (known: ${COMPONENTS[*]} ${ON_REQUEST[*]})" ;;
  esac
}

# module_pins COMPONENT -> "module@version" lines the wrapper go.mod must require.
module_pins() {
  case "$1" in
    kubernetes) echo "k8s.io/kubernetes@${KUBERNETES_VERSION}" ;;
    etcd) echo "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" ;;
    helm) echo "helm.sh/helm/v3@${HELM_VERSION}" ;;
    minio) echo "github.com/minio/minio@${MINIO_VERSION}" ;;
    jobset) echo "sigs.k8s.io/jobset@${JOBSET_VERSION}" ;;
    kueue) echo "sigs.k8s.io/kueue@${KUEUE_VERSION}" ;;
  esac
}

build_targets() {
  case "$1" in
    kubernetes) printf 'k8s.io/kubernetes/cmd/%s ' "${KUBE_CMDS[@]}" ;;
    helm) echo "helm.sh/helm/v3/cmd/helm" ;;
    jobset) echo "sigs.k8s.io/jobset" ;;
    kueue) echo "sigs.k8s.io/kueue/cmd/kueue" ;;
    # The wrapper's own main package: go names the binary after the module's last element.
    etcd | minio) echo "." ;;
  esac
}

sync_component() {
  local comp="$1" dir="${HACK_DIR}/gobuild/$1" pin
  log "sync ${comp}: go.mod from versions.env"
  for pin in $(module_pins "${comp}"); do (cd "${dir}" && go mod edit -require="${pin}"); done
  if [[ "${comp}" == kubernetes ]]; then
    local m
    for m in "${KUBE_STAGING[@]}"; do
      (cd "${dir}" && go mod edit -replace="k8s.io/${m}=k8s.io/${m}@${KUBERNETES_STAGING_VERSION}")
    done
  fi
  (cd "${dir}" && go mod tidy) || die "${comp}: go mod tidy"
}

# check_pins COMPONENT: the wrapper module must pin exactly what versions.env says.
check_pins() {
  local comp="$1" pin mod want got
  for pin in $(module_pins "${comp}"); do
    mod="${pin%@*}" want="${pin#*@}"
    got="$(cd "${HACK_DIR}/gobuild/${comp}" && go list -m -f '{{.Version}}' "${mod}")" ||
      die "${comp}: cannot read ${mod} from hack/gobuild/${comp}/go.mod"
    [[ "${got}" == "${want}" ]] ||
      die "${comp}: go.mod pins ${mod}@${got} but versions.env says ${want}; run $0 --sync"
  done
}

# ldflags_of COMPONENT: -s -w plus the version stamps upstream's own Makefiles set. Without them the
# apiserver reports v0.0.0-master (helm's kubeVersion checks and `kubectl version` then fail).
ldflags_of() {
  local flags="-s -w" v pkg
  case "$1" in
    kubernetes)
      v="${KUBERNETES_VERSION#v}"
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION} -X ${pkg}.gitMajor=${v%%.*}"
        flags+=" -X ${pkg}.gitMinor=$(echo "${v}" | cut -d. -f2) -X ${pkg}.gitTreeState=clean"
      done
      ;;
    helm)
      flags+=" -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
      flags+=" -X helm.sh/helm/v3/internal/version.metadata= -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      # helm's default kube version for `helm template`, derived from its client-go like its Makefile.
      v="$(cd "${HACK_DIR}/gobuild/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)"
      v="$(echo "${v#v}" | cut -d. -f2)"
      for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        flags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${v}"
      done
      ;;
    jobset) flags+=" -X sigs.k8s.io/jobset/pkg/version.GitVersion=${JOBSET_VERSION}" ;;
    kueue) flags+=" -X sigs.k8s.io/kueue/pkg/version.GitVersion=${KUEUE_VERSION}" ;;
  esac
  echo "${flags}"
}

# output_of COMPONENT DIR -> go build's -o. JobSet's main package is its module root, which go
# would name "jobset"; it is the controller manager, so name it that.
output_of() {
  case "$1" in
    jobset) echo "$2/jobset-controller" ;;
    *) echo "$2/" ;;
  esac
}

build_component() {
  local comp="$1" missing=() b
  for b in $(binaries_of "${comp}"); do [[ -x "$(bin_path "${b}")" ]] || missing+=("${b}"); done
  if ((${#missing[@]} == 0)); then log "${comp}: cached"; return; fi
  check_pins "${comp}"
  local out start
  out="$(mktemp -d "${CACHE}/build-${comp}.XXXXXX")"
  start=${SECONDS}
  log "${comp}: building ${missing[*]} (cold builds take many minutes on few cores)"
  # shellcheck disable=SC2046  # build_targets is a word list on purpose
  (cd "${HACK_DIR}/gobuild/${comp}" &&
    go build -trimpath -ldflags="$(ldflags_of "${comp}")" -o "$(output_of "${comp}" "${out}")" \
      $(build_targets "${comp}")) ||
    { rm -rf "${out}"; die "${comp}: go build (see the compiler output above)"; }
  for b in $(binaries_of "${comp}"); do
    [[ -x "${out}/${b}" ]] || { rm -rf "${out}"; die "${comp}: go build produced no ${b}"; }
    mkdir -p "$(dirname "$(bin_path "${b}")")"
    mv -f "${out}/${b}" "$(bin_path "${b}")"
  done
  rm -rf "${out}"
  log "${comp}: built in $((SECONDS - start))s"
}

print_env() {
  local comp b key
  for comp in "${COMPONENTS[@]}" "${ON_REQUEST[@]}"; do
    for b in $(binaries_of "${comp}"); do
      key="KUBEINFER_$(echo "${b}" | tr 'a-z-' 'A-Z_')"
      echo "${key}=$(bin_path "${b}")"
    done
  done
}

main() {
  local sync=0 selected=()
  while (($#)); do
    case "$1" in
      --print-env) print_env; return ;;
      --sync) sync=1 ;;
      -h | --help) sed -n '2,17p' "$0"; return ;;
      -*) die "unknown option $1" ;;
      *) binaries_of "$1" >/dev/null; selected+=("$1") ;;
    esac
    shift
  done
  ((${#selected[@]})) || selected=("${COMPONENTS[@]}")
  command -v go >/dev/null || die "go is not installed (need go >= 1.26 on PATH)"
  mkdir -p "${BIN_ROOT}" "${GOMODCACHE}" "${GOCACHE}"
  # One build at a time per cache: a second caller waits, then finds the binaries cached.
  exec 9>"${CACHE}/build-tools.lock"
  flock 9
  local comp
  for comp in "${selected[@]}"; do
    ((sync)) && sync_component "${comp}"
    build_component "${comp}"
  done
  print_env
}

main "$@"
