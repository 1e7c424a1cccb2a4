"""The per-job NetworkPolicy: the job's own pods on every port, the metrics port from the configured sources."""

from __future__ import annotations

from typing import Any

import pytest
from unit.builders import JobBuilder

from kubeinfer_api.naming import COMPONENT_LABEL, JOB_LABEL, MODEL_PEER_PORT
from kubeinfer_operator.builders import build_network_policy, build_statefulset
from kubeinfer_operator.builders.networkpolicy import WORKER_METRICS_PORT, WORKER_METRICS_PORT_ENV
from kubeinfer_operator.settings import Settings
from kubeinfer_runtime import metrics as runtime_metrics


def policy(job: JobBuilder, scrapers: dict[str, str] | None = None) -> dict[str, Any]:
    return build_network_policy(job.ref(), job.spec(), scrapers or {})


def test_only_the_jobs_pods_reach_its_workers_on_any_port() -> None:
    job = JobBuilder("cats", "team-a")
    obj = policy(job)
    spec = obj["spec"]
    assert obj["apiVersion"] == "networking.k8s.io/v1" and obj["metadata"]["namespace"] == "team-a"
    assert obj["metadata"]["ownerReferences"][0]["name"] == "cats"
    pods = build_statefulset(job.ref(), job.spec(), "img", 0)["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"] == {JOB_LABEL: "cats", COMPONENT_LABEL: "worker"}
    assert spec["podSelector"]["matchLabels"].items() <= pods.items(), "the policy must select the workers"
    assert spec["policyTypes"] == ["Ingress"], "egress (storage, DNS, apiserver) stays open"
    peers, metrics = spec["ingress"]
    # No `ports`: gloo/NCCL and peer model fetches use ports beyond the rendezvous port.
    assert peers == {"from": [{"podSelector": spec["podSelector"]}]}
    ports = build_statefulset(job.ref(), job.spec(), "img", 0)["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert MODEL_PEER_PORT in {p["containerPort"] for p in ports}, "model fan-out between the job's pods"
    assert MODEL_PEER_PORT != WORKER_METRICS_PORT, "the fan-out port must not be open to scrapers"
    assert metrics == {"ports": [{"protocol": "TCP", "port": WORKER_METRICS_PORT}]}, "no `from`: any source"


def test_metrics_sources_and_port_follow_the_settings_and_the_workers_env() -> None:
    scoped = policy(JobBuilder().env(WORKER_METRICS_PORT_ENV, "9500"), {"team": "monitoring"})
    assert scoped["spec"]["ingress"][1] == {"ports": [{"protocol": "TCP", "port": 9500}],
                                            "from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]}
    off = policy(JobBuilder().env(WORKER_METRICS_PORT_ENV, "0"))
    assert len(off["spec"]["ingress"]) == 1, "metrics off: only the job's own pods get in"


def test_the_metrics_port_is_the_runtimes() -> None:
    assert WORKER_METRICS_PORT == runtime_metrics.DEFAULT_PORT
    assert WORKER_METRICS_PORT_ENV == runtime_metrics.PORT_ENV


def test_network_policy_is_on_by_default_and_can_be_turned_off() -> None:
    assert JobBuilder().spec().workers.network_policy is True
    assert JobBuilder().set("workers.networkPolicy", False).spec().workers.network_policy is False


def test_metrics_scrapers_from_env() -> None:
    settings = Settings.from_env({"KUBEINFER_METRICS_SCRAPERS": "kubernetes.io/metadata.name=monitoring, team=obs"})
    assert settings.metrics_scrapers == {"kubernetes.io/metadata.name": "monitoring", "team": "obs"}
    assert Settings.from_env({}).metrics_scrapers == {}


@pytest.mark.parametrize("raw", ["monitoring", "=x", "a=b,c"])
def test_bad_metrics_scrapers_are_refused_at_start(raw: str) -> None:
    with pytest.raises(ValueError, match="KUBEINFER_METRICS_SCRAPERS: expected key=value pairs"):
        Settings.from_env({"KUBEINFER_METRICS_SCRAPERS": raw})
