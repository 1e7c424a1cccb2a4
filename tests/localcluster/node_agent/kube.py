"""A small raw-JSON Kubernetes client: the agent works on dicts as the API sends them (camelCase)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class ApiError(Exception):
    """An API call answered with a non-2xx status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class Kube:
    """Thread-safe HTTP access to the apiserver named by a kubeconfig."""

    def __init__(self, kubeconfig: str) -> None:
        cfg = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
        self.host = cfg.host.rstrip("/")
        self._auth = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
        self.ca_file: str | None = cfg.ssl_ca_cert
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=8,
            cert_reqs="CERT_REQUIRED" if cfg.verify_ssl else "CERT_NONE",
            ca_certs=cfg.ssl_ca_cert,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
        )

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "kubeinfer-node-agent"}
        if self._auth:
            headers["Authorization"] = self._auth
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: dict[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> Obj:
        """One call; raises ApiError on failure, returns the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        resp = self._pool.request(
            method,
            self.host + path + _query_string(query),
            body=data,
            headers=self._headers(content_type if data is not None else None),
            timeout=urllib3.Timeout(connect=5.0, read=timeout),
            retries=False,
        )
        text = resp.data.decode(errors="replace")
        if resp.status >= 300:
            raise ApiError(resp.status, text)
        return json.loads(text) if text else {}

    def get(self, path: str, **query: Any) -> Obj:
        return self.request("GET", path, query=query or None)

    def get_or_none(self, path: str) -> Obj | None:
        """GET that treats 404 as 'absent'."""
        try:
            return self.get(path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def post(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body)

    def put(self, path: str, body: Obj) -> Obj:
        return self.request("PUT", path, body)

    def merge_patch(self, path: str, body: Obj) -> Obj:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: Obj | None = None) -> Obj:
        return self.request("DELETE", path, body)

    def watch(self, path: str, resource_version: str, stop: threading.Event) -> Iterator[Obj]:
        """Yield watch events until the server closes the stream (timeoutSeconds) or `stop` is set."""
        query = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "240",
        }
        resp = self._pool.request(
            "GET",
            self.host + path + _query_string(query),
            headers=self._headers(),
            preload_content=False,
            timeout=urllib3.Timeout(connect=5.0, read=300.0),
            retries=False,
        )
        try:
            if resp.status >= 300:
                raise ApiError(resp.status, resp.read().decode(errors="replace"))
            buf = b""
            for chunk in resp.stream(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
                if stop.is_set():
                    return
        finally:
            resp.release_conn()


def _query_string(query: dict[str, Any] | None) -> str:
    return "?" + urlencode(query) if query else ""


class Informer:
    """List+watch one resource into a dict cache, calling `on_change` after every change."""

    def __init__(self, kube: Kube, path: str, on_change: Callable[[], None]) -> None:
        self.kube = kube
        self.path = path
        self.on_change = on_change
        self.cache: dict[str, Obj] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer{path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def snapshot(self) -> list[Obj]:
        with self.lock:
            return list(self.cache.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._list_and_watch()
            except Exception as err:  # the apiserver may restart; relist after a pause
                log.warning("watch %s: %s", self.path, err)
                self._stop.wait(1.0)

    def _list_and_watch(self) -> None:
        listing = self.kube.get(self.path)
        with self.lock:
            self.cache = {o["metadata"]["uid"]: o for o in listing.get("items", [])}
        self.synced.set()
        self.on_change()
        rv = listing["metadata"]["resourceVersion"]
        while not self._stop.is_set():
            for event in self.kube.watch(self.path, rv, self._stop):
                obj = event["object"]
                if event["type"] == "ERROR":
                    raise ApiError(obj.get("code", 500), str(obj.get("message")))
                rv = obj["metadata"]["resourceVersion"]
                if event["type"] == "BOOKMARK":
                    continue
                with self.lock:
                    if event["type"] == "DELETED":
                        self.cache.pop(obj["metadata"]["uid"], None)
                    else:
                        self.cache[obj["metadata"]["uid"]] = obj
                self.on_change()
