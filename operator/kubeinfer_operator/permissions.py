"""The RBAC rules the operator needs, and nothing more (the chart's ClusterRole/Roles must grant these).

The e2e smoke test runs the operator with exactly these rules, so a missing verb fails there.
"""

from __future__ import annotations

from typing import Any

#: Namespaced rules: a ClusterRole in cluster-wide mode, one Role per watched namespace otherwise.
NAMESPACED_RULES: list[dict[str, Any]] = [
    # kopf watches the jobs and patches its finalizer and annotations; ttlSecondsAfterFinished deletes them.
    {"apiGroups": ["kubeinfer.io"], "resources": ["distributedinferences"],
     "verbs": ["get", "list", "watch", "patch", "delete"]},
    {"apiGroups": ["kubeinfer.io"], "resources": ["distributedinferences/status"], "verbs": ["get", "patch"]},
    # Owner references with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on.
    {"apiGroups": ["kubeinfer.io"], "resources": ["distributedinferences/finalizers"], "verbs": ["update"]},
    # Job + progress ConfigMaps; the progress ones are watched to wake the job's loop.
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "create", "patch"]},
    # Watched (an index), so a pass reads its StatefulSet from memory.
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get", "list", "watch", "create", "patch",
                                                                      "delete"]},
    # The job's NetworkPolicy (workers.networkPolicy); deleted with the job by the garbage collector.
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "create", "patch"]},
    # Worker pods are watched and read for failures; a gang restart deletes them.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "delete"]},
    # The worker Role (get/patch on one ConfigMap) is grantable because the operator holds those verbs.
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
     "verbs": ["get", "create", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # Gang scheduling: one PodGroup per attempt, deleted with the attempt (no watch: the pods tell).
    {"apiGroups": ["scheduling.k8s.io"], "resources": ["podgroups"], "verbs": ["get", "create", "delete"]},
]
#: Cluster-scoped reads, needed in both modes.
CLUSTER_RULES: list[dict[str, Any]] = [
    # kopf discovers the CRD and notices it (re)appearing.
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["list", "watch"]},
    # Workers on a NotReady (or vanished) node are restarted elsewhere (node readiness is watched).
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]},
    # kopf watches namespaces when it serves namespace patterns.
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]
#: With the Kueue integration on (chart value kueue.enabled): namespaced, then cluster-scoped.
KUEUE_NAMESPACED_RULES: list[dict[str, Any]] = [
    # The job's Workload: created, watched, its spec.active and status patched.
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads/status"], "verbs": ["get", "patch"]},
    # While a job waits: its LocalQueue's counts, for the Queued message.
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["localqueues"], "verbs": ["get"]},
]
KUEUE_CLUSTER_RULES: list[dict[str, Any]] = [
    # An admission's flavors (node labels, tolerations) and the job's priority for its Workload.
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["resourceflavors", "workloadpriorityclasses"], "verbs": ["get"]},
    {"apiGroups": ["scheduling.k8s.io"], "resources": ["priorityclasses"], "verbs": ["get"]},
]
