"""Placement in one topology domain: `scheduling.topologyKey` keeps a job's workers in one zone.

Two zones of two 2-CPU nodes (one worker each), labelled topology.kubernetes.io/zone by their node
agents. Every job here prefers one node in each zone (weight 100), so without the constraint its two
workers take one zone each (the control case shows it); with it they share a zone: through pod
affinity when gang scheduling is off, through the PodGroup's topology constraint when it is on (the
Kueue topology request is tested with Kueue, in test_kueue.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from e2e.support.cluster import Cluster
from e2e.support.jobs import item_count, job_outputs, launch
from e2e.support.pool import Pool
from e2e.support.zones import placed_zones, split_job, zone_pool

# One worker runs the module: its fixture starts the zone nodes.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("topology")]
TIMEOUT = 600


@pytest.fixture(scope="module")
def zones(nodes: Cluster) -> Iterator[Pool]:
    with zone_pool(nodes, "e2e-topo") as pool:
        yield pool


def test_without_a_topology_key_the_workers_spread(zones: Pool, operator: Cluster, job_namespace: str) -> None:
    """The control case: the preferences alone put the two workers in two zones."""
    zones.wait_empty()
    name = launch(operator, job_namespace, split_job(zones, "spread", job_namespace, topology=False))
    assert sorted(placed_zones(zones, job_namespace, name, 2)) == ["zone-a", "zone-b"]
    operator.kubectl("delete", "dinf", name, "-n", job_namespace, "--wait=false")


@pytest.mark.parametrize("gang", ["Disabled", "Auto"], ids=["pod-affinity", "podgroup-constraint"])
def test_the_job_lands_in_one_zone(zones: Pool, operator: Cluster, job_namespace: str, tiny_models: Any,
                                   gang: str) -> None:
    zones.wait_empty()
    manifest = split_job(zones, "together", job_namespace, topology=True, gang=gang)
    name = launch(operator, job_namespace, manifest)
    placed = placed_zones(zones, job_namespace, name, 2)
    assert len(set(placed)) == 1, f"workers in several zones: {placed}"
    operator.wait_condition(name, job_namespace, "Complete", TIMEOUT)
    assert len(job_outputs(operator, job_namespace, name).items) == item_count(manifest)
