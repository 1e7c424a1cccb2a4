"""observe(): which pods count, which failure is first and why, what is stale or lost."""

from __future__ import annotations

import pytest
from unit.builders import PodBuilder, gang

from kubeinfer_api.progress import Progress, encode
from kubeinfer_operator.handlers import snapshot
from kubeinfer_operator.observe import observe

READY = {"node-1": True, "node-2": True}
STS: dict[str, object] = {"metadata": {"name": "cats-workers"}}  # the StatefulSet exists


def test_running_gang() -> None:
    obs = observe([p.running().obj() for p in gang("cats", 2)], 0, READY, None, STS)
    assert obs.running == 2 and obs.failure is None and obs.all_running(2)
    assert obs.current_pods == ("cats-workers-0", "cats-workers-1") and obs.stale == ()


def test_pods_of_an_older_attempt_are_stale_and_their_failures_ignored() -> None:
    pods = [PodBuilder("cats", 0).attempt(0).crashed().obj(), PodBuilder("cats", 1).attempt(1).running().obj()]
    obs = observe(pods, 1, READY, None, STS)
    assert obs.stale == ("cats-workers-0",) and obs.failure is None
    assert not obs.all_running(1)  # stale pods still around


FAILURES = [
    (PodBuilder().crashed(exit_code=3, message="Traceback: boom"), "WorkerFailed", "boom", 3),
    (PodBuilder().crashed(exit_code=1, restarted=False), "WorkerFailed", "Error (exit code 1)", 1),
    (PodBuilder().crashed(exit_code=137, reason="OOMKilled"), "WorkerFailed", "OOMKilled", 137),
    (PodBuilder().crashed(message="RendezvousTimeout: cats-workers-0:29500 unreachable after 600s"),
     "RendezvousTimeout", "unreachable after 600s", 1),
    (PodBuilder().running().deleted(), "PodDeleted", "deleted", None),
    (PodBuilder().running().disrupted("Evicted by the Eviction API").deleted(), "Preempted", "Eviction API", None),
    (PodBuilder().running().disrupted("memory", "TerminationByKubelet").deleted(), "PodEvicted", "memory", None),
    (PodBuilder().evicted_by_kubelet(), "PodEvicted", "low on memory", None),
    (PodBuilder().running().node("node-2"), "NodeNotReady", "node-2", None),
]


@pytest.mark.parametrize(("pod", "reason", "message_part", "exit_code"), FAILURES)
def test_failure_classification(pod: PodBuilder, reason: str, message_part: str, exit_code: int | None) -> None:
    obs = observe([pod.obj()], 0, {"node-1": True, "node-2": False}, None, STS)
    assert obs.failure is not None
    assert obs.failure.reason == reason and message_part in obs.failure.message
    assert obs.failure.exit_code == exit_code and obs.failure.pod == "cats-workers-0"


@pytest.mark.parametrize("pod", [case[0] for case in FAILURES] + [PodBuilder().running(), PodBuilder().attempt(3)])
def test_the_watch_snapshot_keeps_what_observe_reads(pod: PodBuilder) -> None:
    full = pod.obj()
    full["metadata"]["managedFields"] = [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]
    full.setdefault("spec", {})["containers"] = [{"name": "worker", "image": "runtime:1"}]
    slim = snapshot(full)
    assert "managedFields" not in slim["metadata"] and "containers" not in slim.get("spec", {})
    nodes = {"node-1": True, "node-2": False}
    assert observe([slim], 3, nodes, None, STS) == observe([full], 3, nodes, None, STS)
    assert observe([slim], 0, nodes, None, STS) == observe([full], 0, nodes, None, STS)


def test_worker_reason_is_not_repeated_in_the_message() -> None:
    obs = observe([PodBuilder().crashed(message="ModelNotFound: s3://models/x has no model_index.json").obj()],
                  0, READY, None, STS)
    assert obs.failure is not None and obs.failure.reason == "ModelNotFound"
    assert obs.failure.message == "s3://models/x has no model_index.json"


def test_exit_zero_is_a_finished_worker_not_a_failure() -> None:
    obs = observe([PodBuilder().crashed(exit_code=0, reason="Completed").obj()], 0, READY, None, STS)
    assert obs.failure is None


def test_first_failure_is_the_earliest_not_the_first_pod() -> None:
    pods = [PodBuilder("cats", 0).crashed(message="collective failed", finished="2026-01-01T00:05:09Z").obj(),
            PodBuilder("cats", 1).crashed(exit_code=137, reason="OOMKilled", finished="2026-01-01T00:05:01Z").obj()]
    obs = observe(pods, 0, READY, None, STS)
    assert obs.failure is not None and obs.failure.pod == "cats-workers-1" and obs.failure.exit_code == 137


def test_long_termination_messages_keep_the_tail() -> None:
    obs = observe([PodBuilder().crashed(message="x" * 5000 + "ROOT CAUSE").obj()], 0, READY, None, STS)
    assert obs.failure is not None and obs.failure.message.endswith("ROOT CAUSE")
    assert len(obs.failure.message) < 2100


def test_vanished_node_counts_as_not_ready_and_its_pods_are_lost() -> None:
    pods = [PodBuilder("cats", 0).running().node("gone").obj(), PodBuilder("cats", 1).running().obj()]
    obs = observe(pods, 0, {"gone": False, "node-1": True}, None, STS)
    assert obs.lost == ("cats-workers-0",) and obs.failure is not None
    assert obs.failure.reason == "NodeNotReady"


def test_stuck_waiting_reasons_are_reported_not_failed() -> None:
    obs = observe([PodBuilder().waiting("ImagePullBackOff", "no such image").obj()], 0, READY, None, STS)
    assert obs.failure is None and obs.running == 0
    assert obs.waiting == ("cats-workers-0: ImagePullBackOff: no such image",)


def test_progress_is_decoded_and_garbage_ignored() -> None:
    data = encode(Progress(attempt=0, phase="running", total=10, succeeded=4))
    assert observe([], 0, READY, data, STS).progress == Progress.model_validate_json(data["progress.json"])
    assert observe([], 0, READY, {"progress.json": "{not json"}, STS).progress is None
