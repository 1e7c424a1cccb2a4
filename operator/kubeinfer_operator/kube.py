"""A small JSON client for the few kinds the operator touches, on the kubernetes package's transport.

The operator works on plain dicts (camelCase, as the API sends them) end to end: builders produce
them, observe reads them, and no typed model conversion can drop or rename a field in between.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kubeinfer_api import GROUP, PLURAL, VERSION

Obj = dict[str, Any]
#: kind -> (API prefix, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Service": ("/api/v1", "services", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Pod": ("/api/v1", "pods", True),
    "Event": ("/api/v1", "events", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "DistributedInference": (f"/apis/{GROUP}/{VERSION}", PLURAL, True),
    "PodGroup": ("/apis/scheduling.k8s.io/v1beta1", "podgroups", True),
    "PriorityClass": ("/apis/scheduling.k8s.io/v1", "priorityclasses", False),
    "Workload": ("/apis/kueue.x-k8s.io/v1beta2", "workloads", True),
    "LocalQueue": ("/apis/kueue.x-k8s.io/v1beta2", "localqueues", True),
    "ResourceFlavor": ("/apis/kueue.x-k8s.io/v1beta2", "resourceflavors", False),
    "WorkloadPriorityClass": ("/apis/kueue.x-k8s.io/v1beta2", "workloadpriorityclasses", False),
}
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP code (404 missing, 409 conflict/exists)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def load_api_client(kubeconfig: str | None = None, pool: int = 32) -> k8s.ApiClient:
    """In-cluster ServiceAccount when running in a pod, else KUBECONFIG / ~/.kube/config."""
    cfg = k8s.Configuration()
    cfg.connection_pool_maxsize = pool  # above the reconcile threads: no reconnect per request
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return k8s.ApiClient(cfg)
        except k8s_config.ConfigException:
            pass
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    return k8s.ApiClient(cfg)


def path(kind: str, namespace: str | None = None, name: str | None = None, subresource: str = "") -> str:
    prefix, plural, namespaced = KINDS[kind]
    out = prefix + (f"/namespaces/{quote(namespace)}" if namespaced and namespace else "") + f"/{plural}"
    if name:
        out += f"/{quote(name)}"
    return out + (f"/{subresource}" if subresource else "")


class Kube:
    """Thread-safe (urllib3 pool) calls; every method raises ApiError on failure."""

    def __init__(self, api: k8s.ApiClient, timeout: float = 30.0) -> None:
        self.api = api
        self.timeout = timeout

    def request(self, method: str, url: str, body: Any = None, content_type: str = "application/json",
                query: dict[str, Any] | None = None) -> Obj:
        headers = {"Accept": "application/json", "User-Agent": "kubeinfer-operator"}
        if body is not None:
            headers["Content-Type"] = content_type
        full = url + ("?" + urlencode(query) if query else "")
        _, target, headers, _, _ = self.api.param_serialize(
            method=method, resource_path=full, header_params=headers, auth_settings=["BearerToken"])
        response = self.api.rest_client.pool_manager.request(
            method, target, body=None if body is None else json.dumps(body).encode(), headers=headers,
            timeout=self.timeout, retries=False)
        text = response.data.decode(errors="replace")
        if response.status >= 300:
            raise ApiError(response.status, text)
        return json.loads(text) if text else {}

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", path(kind, namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None, selector: dict[str, str] | None = None) -> list[Obj]:
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())} if selector else None
        items: list[Obj] = self.request("GET", path(kind, namespace), query=query).get("items") or []
        return items

    def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        return self.request("POST", path(obj["kind"], meta.get("namespace")), body=obj)

    def patch(self, kind: str, namespace: str | None, name: str, body: Obj, *, subresource: str = "",
              content_type: str = MERGE_PATCH) -> Obj:
        return self.request("PATCH", path(kind, namespace, name, subresource), body=body, content_type=content_type)

    def delete(self, kind: str, namespace: str | None, name: str, *, grace_seconds: int | None = None,
               propagation: str = "Background", uid: str | None = None) -> bool:
        """True when something was deleted; a missing object is not an error.

        With `uid`, only that very object: a StatefulSet reuses pod names, so a pod seen a moment ago
        may already have been replaced by its successor, which must live.
        """
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", path(kind, namespace, name), body=body)
        except ApiError as err:
            if err.status == 404 or (err.status == 409 and uid is not None):  # gone, or a successor
                return False
            raise
        return True
