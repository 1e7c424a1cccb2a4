#!/usr/bin/env bash
# A kind cluster for the end-to-end suite on a machine with Docker: `pytest tests/e2e --cluster=kind`.
#
#   bash hack/kind-e2e.sh          create the cluster, build and load both images, install MinIO,
#                                  then print the env the suite reads (`export KEY=VALUE` lines)
#   bash hack/kind-e2e.sh env      print that env again
#   bash hack/kind-e2e.sh down     delete the cluster
#
#   eval "$(bash hack/kind-e2e.sh)" && .venv/bin/python -m pytest --cluster=kind $(bash hack/kind-e2e.sh tests)
#
# The shared test code is identical on both clusters; only this setup differs (tests/e2e/support/kind.py
# documents the names it relies on). Needs docker, kind, kubectl; logs go to stderr, env to stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# tests/e2e/support/kind.py names the nodes kind-worker, kind-worker2 and the spare kind-worker3.
CLUSTER=kind
KUBECONFIG_PATH="${KUBEINFER_KIND_KUBECONFIG:-${HOME}/.cache/kubeinfer/kind/kubeconfig}"
S3_NODE_PORT=30900
S3_USER=kubeinfer-e2e
S3_PASSWORD=kubeinfer-e2e-secret
SPARE_NODE=kind-worker3
SPARE_TAINT=kubeinfer-e2e/spare=true:NoSchedule
# The runtime image on CPU: kind nodes have no GPUs, and the CPU wheels keep the image small.
RUNTIME_BUILD_ARGS=(--build-arg CUDA_IMAGE=ubuntu:24.04 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu)
# The files of the suite that run on any cluster; the rest test the local cluster itself.
# tests/e2e/kindonly needs a CNI that enforces NetworkPolicy (kindnet does; the local cluster does not).
E2E_TESTS=(tests/e2e/test_chart_install.py tests/e2e/test_validation_apiserver.py tests/e2e/test_jobs.py
  tests/e2e/test_faults.py tests/e2e/test_security.py tests/e2e/kindonly)

log() { printf '[kind-e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
kc() { kubectl --kubeconfig "${KUBECONFIG_PATH}" "$@"; }

print_env() {
  cat <<ENV
export KUBECONFIG=${KUBECONFIG_PATH}
export KUBEINFER_E2E_CLUSTER=kind
export KUBEINFER_E2E_S3_ENDPOINT=http://127.0.0.1:${S3_NODE_PORT}
export KUBEINFER_E2E_S3_POD_ENDPOINT=http://minio.minio.svc:9000
export KUBEINFER_E2E_S3_ACCESS_KEY=${S3_USER}
export KUBEINFER_E2E_S3_SECRET_KEY=${S3_PASSWORD}
ENV
}

create_cluster() {
  mkdir -p "$(dirname "${KUBECONFIG_PATH}")"
  if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
    log "cluster ${CLUSTER} exists: reusing it"
    kind export kubeconfig --name "${CLUSTER}" --kubeconfig "${KUBECONFIG_PATH}" >&2
    return
  fi
  log "creating kind cluster ${CLUSTER} (control plane + 3 workers)"
  # MinIO's NodePort is mapped to the host so the tests reach it at 127.0.0.1.
  kind create cluster --name "${CLUSTER}" --kubeconfig "${KUBECONFIG_PATH}" --wait 180s --config - >&2 <<KIND
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraPortMappings:
      - {containerPort: ${S3_NODE_PORT}, hostPort: ${S3_NODE_PORT}, listenAddress: "127.0.0.1"}
  - role: worker
  - role: worker
  - role: worker
KIND
  kc taint node "${SPARE_NODE}" "${SPARE_TAINT}" --overwrite >&2
}

build_images() {
  log "building the operator and runtime images (Dockerfile targets)"
  docker build --target operator -t kubeinfer/kubeinfer-operator:e2e "${ROOT}" >&2
  docker build --target runtime "${RUNTIME_BUILD_ARGS[@]}" -t kubeinfer/kubeinfer-runtime:e2e "${ROOT}" >&2
  kind load docker-image --name "${CLUSTER}" kubeinfer/kubeinfer-operator:e2e kubeinfer/kubeinfer-runtime:e2e >&2
}

install_minio() {
  log "installing MinIO in namespace minio (NodePort ${S3_NODE_PORT})"
  kc apply -f - >&2 <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: minio}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: minio, namespace: minio}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector: {matchLabels: {app: minio}}
  template:
    metadata: {labels: {app: minio}}
    spec:
      # Never on the spare node: the node-loss test powers it off.
      nodeSelector: {kubernetes.io/hostname: kind-control-plane}
      tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
      containers:
        - name: minio
          image: quay.io/minio/minio:latest
          args: [server, /data]
          env:
            - {name: MINIO_ROOT_USER, value: ${S3_USER}}
            - {name: MINIO_ROOT_PASSWORD, value: ${S3_PASSWORD}}
          ports: [{containerPort: 9000}]
          readinessProbe: {httpGet: {path: /minio/health/ready, port: 9000}}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: minio, namespace: minio}
spec:
  type: NodePort
  selector: {app: minio}
  ports: [{port: 9000, targetPort: 9000, nodePort: ${S3_NODE_PORT}}]
YAML
  kc rollout status deployment/minio -n minio --timeout=300s >&2
}

main() {
  case "${1:-up}" in
    up)
      for tool in docker kind kubectl; do command -v "${tool}" >/dev/null || die "${tool} is not installed"; done
      create_cluster
      build_images
      install_minio
      log "ready; run: eval \"\$(bash hack/kind-e2e.sh env)\" && .venv/bin/python -m pytest ${E2E_TESTS[*]}"
      print_env
      ;;
    env) print_env ;;
    tests) echo "${E2E_TESTS[*]}" ;;
    down) kind delete cluster --name "${CLUSTER}" >&2 ;;
    -h | --help) sed -n '2,13p' "$0" ;;
    *) die "unknown command $1 (up | env | tests | down)" ;;
  esac
}

main "$@"
