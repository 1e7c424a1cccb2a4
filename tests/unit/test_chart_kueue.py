"""The chart's kueue.enabled value: the operator's Kueue switch and exactly the RBAC it then needs."""

from __future__ import annotations

import pytest
from unit.test_chart import env_of, grants, only, render, template

from kubeinfer_operator.permissions import CLUSTER_RULES, KUEUE_CLUSTER_RULES, KUEUE_NAMESPACED_RULES, NAMESPACED_RULES
from kubeinfer_operator.settings import Settings


def test_kueue_is_off_by_default_with_no_kueue_rbac() -> None:
    docs = render()
    assert env_of(docs)["KUBEINFER_KUEUE_ENABLED"] == "false"
    assert not Settings.from_env({"KUBEINFER_KUEUE_ENABLED": "false"}).kueue
    assert not {g for g, _, _ in grants(only(docs, "ClusterRole")["rules"])} & {"kueue.x-k8s.io"}


def test_kueue_enabled_grants_exactly_the_integrations_rules() -> None:
    docs = render("kueue.enabled=true")
    assert env_of(docs)["KUBEINFER_KUEUE_ENABLED"] == "true"
    assert Settings.from_env({"KUBEINFER_KUEUE_ENABLED": "true"}).kueue
    expected = NAMESPACED_RULES + CLUSTER_RULES + KUEUE_NAMESPACED_RULES + KUEUE_CLUSTER_RULES
    assert grants(only(docs, "ClusterRole")["rules"]) == grants(expected)


def test_kueue_enabled_in_namespaced_mode_splits_the_rules() -> None:
    docs = render("kueue.enabled=true", "watchNamespaces={team-a}")
    assert grants(only(docs, "Role")["rules"]) == grants(NAMESPACED_RULES + KUEUE_NAMESPACED_RULES)
    assert grants(only(docs, "ClusterRole")["rules"]) == grants(CLUSTER_RULES + KUEUE_CLUSTER_RULES)


@pytest.mark.parametrize("value", ["kueue.enabled=yes-please", "kueue.enable=true"])
def test_kueue_value_is_checked_by_the_schema(value: str) -> None:
    assert template(value).returncode != 0
