"""The kind backend: a kind cluster made by hack/kind-e2e.sh (Docker needed; cannot run on the dev box).

The script creates the cluster (nodes kind-control-plane, kind-worker, kind-worker2 and a spare
kind-worker3 tainted `kubeinfer-e2e/spare=true:NoSchedule`), builds and `kind load`s the two Docker
targets as kubeinfer/kubeinfer-operator:e2e and kubeinfer/kubeinfer-runtime:e2e, installs MinIO as
Deployment `minio` in namespace `minio`, and exports:

    KUBECONFIG                       the kind cluster's kubeconfig
    KUBEINFER_E2E_S3_ENDPOINT        MinIO as this host reaches it (a NodePort / port-forward)
    KUBEINFER_E2E_S3_POD_ENDPOINT    MinIO as pods reach it (http://minio.minio.svc:9000)
    KUBEINFER_E2E_S3_ACCESS_KEY, KUBEINFER_E2E_S3_SECRET_KEY
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.support.cluster import Cluster
from e2e.support.policies import CACHE_HOST_DIR

SPARE_NODE = "kind-worker3"
REGION = "us-east-1"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"--cluster=kind needs ${name}: run `bash hack/kind-e2e.sh` first and source its env")
    return value


@dataclass
class KindBackend:
    """Implements `support.cluster.Backend` on kind."""

    kubeconfig: Path
    s3_endpoint: str
    s3_pod_endpoint: str
    access_key: str
    secret_key: str
    name: str = "kind"
    kubectl_bin: str = "kubectl"
    helm_bin: str = "helm"

    @classmethod
    def from_env(cls) -> KindBackend:
        return cls(
            Path(_env("KUBECONFIG")), _env("KUBEINFER_E2E_S3_ENDPOINT"), _env("KUBEINFER_E2E_S3_POD_ENDPOINT"),
            _env("KUBEINFER_E2E_S3_ACCESS_KEY"), _env("KUBEINFER_E2E_S3_SECRET_KEY"),
            kubectl_bin=shutil.which("kubectl") or "kubectl", helm_bin=shutil.which("helm") or "helm",
        )  # fmt: skip

    def chart_values(self) -> list[str]:
        return [
            "image.repository=kubeinfer/kubeinfer-operator", "image.tag=e2e", "image.pullPolicy=Never",
            "workerImage.repository=kubeinfer/kubeinfer-runtime", "workerImage.tag=e2e",
            f"policies.jobAuthors.allowedCacheHostPaths={{{CACHE_HOST_DIR}}}",
        ]  # fmt: skip

    def s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.s3_endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=REGION,
            config=Config(s3={"addressing_style": "path"}),
        )  # fmt: skip

    def s3_pod_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.s3_pod_endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": REGION,
        }  # fmt: skip

    def s3_host_env(self) -> dict[str, str]:
        return {**self.s3_pod_env(), "AWS_ENDPOINT_URL": self.s3_endpoint}

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        cluster = Cluster(self)
        previous = cluster.kubectl("logs", "-n", namespace, pod, "-c", container, "--previous", check=False).stdout
        return previous + cluster.kubectl("logs", "-n", namespace, pod, "-c", container, check=False).stdout

    def kill_container(self, namespace: str, pod: str) -> None:
        """SIGKILL the container's main process from its kind node (PID 1 cannot be killed from inside)."""
        obj = Cluster(self).get("pod", pod, namespace)
        assert obj is not None, f"pod {namespace}/{pod} does not exist"
        container_id = obj["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
        script = f"kill -9 $(crictl inspect --output go-template --template '{{{{.info.pid}}}}' {container_id})"
        subprocess.run(["docker", "exec", obj["spec"]["nodeName"], "sh", "-c", script], check=True)

    def container_identity(self, namespace: str, pod: str) -> tuple[int, bool]:
        """The container's uid, and whether writing to `/` fails for it, by `kubectl exec`."""
        probe = "import os; print(os.geteuid(), int(not os.access('/', os.W_OK)))"
        result = Cluster(self).kubectl("exec", "-n", namespace, pod, "--", "python3", "-c", probe)
        uid, read_only = result.stdout.split()
        return int(uid), read_only == "1"

    def lose_node(self, node: str) -> None:
        subprocess.run(["docker", "kill", node], check=True, capture_output=True)

    def restore_node(self, node: str) -> None:
        subprocess.run(["docker", "start", node], check=True, capture_output=True)

    def spare_node(self) -> str:
        return SPARE_NODE

    def stop_s3(self) -> None:
        Cluster(self).kubectl("scale", "deployment/minio", "-n", "minio", "--replicas=0")
        Cluster(self).kubectl("wait", "--for=delete", "pod", "-l", "app=minio", "-n", "minio", "--timeout=60s",
                              check=False)

    def start_s3(self) -> None:
        Cluster(self).kubectl("scale", "deployment/minio", "-n", "minio", "--replicas=1")
        Cluster(self).kubectl("rollout", "status", "deployment/minio", "-n", "minio", "--timeout=120s")

    def log_files(self) -> list[Path]:
        return []
