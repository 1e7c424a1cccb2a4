"""The kubeinfer operator: turns a DistributedInference into workers and reports on them truthfully.

Pure modules decide (builders/, observe, conditions, *_policy, suspend, ttl, reconcile.decide); the
I/O modules (kube, apply, reconcile.Reconciler, handlers) only read the cluster and carry decisions out.
"""

from __future__ import annotations
