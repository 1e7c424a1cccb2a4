"""apply's difference check, settings from env, metrics labels, the CLI's scope flags."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest

from kubeinfer_api.naming import JOB_LABEL
from kubeinfer_operator.apply import is_subset
from kubeinfer_operator.handlers import Wakeup, nap, next_delay, worker_pod_changed
from kubeinfer_operator.kueue_handlers import workload_changed
from kubeinfer_operator.main import parse_args
from kubeinfer_operator.metrics import Metrics
from kubeinfer_operator.reconciler import Result, parse_status
from kubeinfer_operator.settings import Settings


@pytest.mark.parametrize(("want", "have", "same"), [
    ({"a": 1}, {"a": 1, "defaulted": True}, True),
    ({"a": {"b": "1Gi"}}, {"a": {"b": "1024Mi"}}, True),  # the apiserver canonicalises quantities
    ({"port": 29500}, {"port": "29500"}, True),
    ({"replicas": 2}, {"replicas": 3}, False),
    ({"env": [{"name": "A", "value": "1"}]}, {"env": [{"name": "A", "value": "1"}, {"name": "B"}]}, False),
    ({"env": [{"name": "A"}]}, {"env": [{"name": "A", "valueFrom": {}}]}, True),
    ({"flag": True}, {"flag": "True"}, False),
    ({"a": {"x": 1}}, {}, False),
    ({"annotations": {"kubeinfer.io/attempt": "1"}}, {"annotations": {"kubeinfer.io/attempt": "0"}}, False),
])
def test_is_subset(want: object, have: object, same: bool) -> None:
    assert is_subset(want, have) is same


def test_settings_from_env() -> None:
    s = Settings.from_env({"KUBEINFER_WORKER_IMAGE": "img:1", "KUBEINFER_METRICS_PORT": "0",
                           "KUBEINFER_NAMESPACES": " team-a, team-b ,", "KUBEINFER_LOG_LEVEL": "debug"})
    assert (s.worker_image, s.metrics_port, s.namespaces, s.log_level) == ("img:1", 0, ("team-a", "team-b"), "DEBUG")
    assert Settings.from_env({}).namespaces == () and Settings.from_env({}).metrics_port == 9090


def test_bad_setting_names_the_variable() -> None:
    with pytest.raises(ValueError, match="KUBEINFER_METRICS_PORT"):
        Settings.from_env({"KUBEINFER_METRICS_PORT": "nine"})


def test_metrics_are_bounded_and_counted() -> None:
    m = Metrics()
    m.jobs.set("ns", "a", "Running")
    m.jobs.set("ns", "b", "Running")
    m.jobs.set("ns", "c", "Failed")
    m.jobs.forget("ns", "c")
    m.restarted("ns", "Stalled")
    m.restarted("ns", "SomethingTheWorkerMadeUp")
    text = generate_latest(m.registry).decode()
    assert 'kubeinfer_jobs{condition="Running",namespace="ns"} 2.0' in text
    assert 'kubeinfer_jobs{condition="Failed",namespace="ns"} 0.0' in text
    assert 'kubeinfer_restarts_total{namespace="ns",reason="Stalled"} 1.0' in text
    assert 'reason="WorkerFailed"} 1.0' in text and "SomethingTheWorkerMadeUp" not in text
    assert "kubeinfer_reconcile_duration_seconds_bucket" in text


@pytest.mark.parametrize(("result", "delay"), [
    (None, 30.0),
    (Result("Running", None), 30.0),
    (Result("Running", 5.0), 5.0),
    (Result("Running", 0.0), 0.5),
    (Result("Complete", None), 300.0),
    (Result("Complete", 1000.0), 300.0),
])
def test_next_delay(result: Result | None, delay: float) -> None:
    assert next_delay(result, Settings()) == delay


def test_cli_scope() -> None:
    assert parse_args(["-n", "a", "--namespace", "b"]).namespace == ["a", "b"]
    assert parse_args(["--all-namespaces", "--liveness", "http://0.0.0.0:8080/healthz"]).all_namespaces
    with pytest.raises(SystemExit):
        parse_args(["-A", "-n", "a"])


def test_unreadable_status_parts_are_dropped_not_fatal() -> None:
    status = parse_status({"attempt": 3, "restarts": 2, "plan": {"bogus": 1}})
    assert status.attempt == 3 and status.restarts == 2 and status.plan is None


class _Stopped:
    """Stands in for kopf's DaemonStopped flag: awaitable `wait()`, truthy when set."""

    def __init__(self) -> None:
        self.flag = asyncio.Event()

    def wait(self) -> Any:
        return self.flag.wait()

    def __bool__(self) -> bool:
        return self.flag.is_set()


def test_a_wakeup_ends_the_nap_and_is_consumed() -> None:
    async def scenario() -> tuple[bool, bool]:
        wakeup, stopped = Wakeup(), _Stopped()
        memo = SimpleNamespace(wakeups={("ns", "cats"): wakeup})
        await worker_pod_changed(namespace="ns", labels={JOB_LABEL: "cats"}, memo=memo)
        await worker_pod_changed(namespace="ns", labels={JOB_LABEL: "other"}, memo=memo)  # no loop: ignored
        await nap(wakeup, stopped, 3600)  # returns at once: the wakeup is already set
        woken_cleared = not wakeup.changed.is_set()
        stopped.flag.set()
        await nap(wakeup, stopped, 3600)  # returns at once: the daemon is stopping
        return woken_cleared, stopped.flag.is_set()

    assert asyncio.run(scenario()) == (True, True)


def test_wakeups_within_the_settle_window_make_one_pass() -> None:
    async def scenario() -> tuple[float, bool]:
        wakeup, stopped = Wakeup(), _Stopped()
        loop = asyncio.get_running_loop()
        for delay in (0.0, 0.05, 0.1):  # a burst of pod events
            loop.call_later(delay, wakeup.changed.set)
        started = loop.time()
        await nap(wakeup, stopped, 3600, settle=0.3)
        return loop.time() - started, wakeup.changed.is_set()

    waited, pending = asyncio.run(scenario())
    assert 0.3 <= waited < 1.0 and not pending, "the burst is consumed by one wakeup after the window"


@pytest.mark.parametrize("pod_change_first", [False, True])
def test_a_kueue_admission_is_acted_on_at_once(pod_change_first: bool) -> None:
    """A Workload change (Kueue admitted the job) ends the nap without the settle window, also when it
    comes while a pod change is settling; the nap consumes both."""
    async def scenario() -> tuple[float, bool, bool]:
        wakeup, stopped = Wakeup(), _Stopped()
        memo = SimpleNamespace(wakeups={("ns", "cats"): wakeup})
        loop = asyncio.get_running_loop()
        if pod_change_first:
            await worker_pod_changed(namespace="ns", labels={JOB_LABEL: "cats"}, memo=memo)
        admission = workload_changed(namespace="ns", labels={JOB_LABEL: "cats"}, memo=memo)
        loop.call_later(0.1, asyncio.ensure_future, admission)
        started = loop.time()
        await nap(wakeup, stopped, 3600, settle=10.0)
        return loop.time() - started, wakeup.changed.is_set(), wakeup.urgent.is_set()

    waited, *left = asyncio.run(scenario())
    assert waited < 2.0, "the admission waited out the settle window"
    assert left == [False, False], "the wakeups that ended the nap are consumed"
