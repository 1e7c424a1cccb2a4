"""Create what is missing, patch what differs, never duplicate: safe to repeat at any time.

"Differs" means a field we set is not what the cluster has; fields the apiserver defaults or other
controllers add are left alone. A 409 on create means another pass created it first: we use theirs.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.utils import parse_quantity

from kubeinfer_operator.kube import STRATEGIC_PATCH, ApiError, Kube

log = logging.getLogger(__name__)
Obj = dict[str, Any]
#: Written once at creation and never patched (the workers own its data).
CREATE_ONLY = frozenset({"progress"})


def _scalar_equal(want: Any, have: Any) -> bool:
    """Quantities come back canonical ("1024Mi" -> "1Gi") and ports as ints: compare values."""
    if want == have or (not isinstance(want, bool) and str(want) == str(have)):
        return True
    if isinstance(want, bool) or isinstance(have, bool) or want is None or have is None:
        return False
    try:
        return bool(parse_quantity(want) == parse_quantity(have))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, ArithmeticError):
        return False


def is_subset(want: Any, have: Any) -> bool:
    """Every field of `want` is in `have` with the same value (lists: same length, element-wise)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(is_subset(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(is_subset, want, have))
    return _scalar_equal(want, have)


def _patchable(obj: Obj) -> Obj:
    """The parts of a desired object worth comparing and patching (not apiVersion/kind/name)."""
    meta = obj["metadata"]
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    body["metadata"] = {k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta}
    return body


def ensure(kube: Kube, desired: Obj, *, create_only: bool = False, likely_missing: bool = False) -> tuple[Obj, str]:
    """Make `desired` exist as specified; returns (live object, "created" | "patched" | "unchanged").

    `likely_missing` (a new job) tries the create first, saving a GET per child.
    """
    kind, meta = desired["kind"], desired["metadata"]
    live = None if likely_missing else kube.get(kind, meta.get("namespace"), meta["name"])
    if live is None:
        try:
            return kube.create(desired), "created"
        except ApiError as err:
            if err.status != 409:
                raise
            live = kube.get(kind, meta.get("namespace"), meta["name"])
            if live is None:  # created and deleted between our calls: the next pass will retry
                raise
    if create_only or is_subset(_patchable(desired), live):
        return live, "unchanged"
    log.info("patching %s %s/%s", kind, meta.get("namespace"), meta["name"])
    patched = kube.patch(kind, meta.get("namespace"), meta["name"], _patchable(desired),
                         content_type=STRATEGIC_PATCH)
    return patched, "patched"


def remove(kube: Kube, kind: str, namespace: str, name: str) -> bool:
    """Delete if present (foreground is not needed: the garbage collector removes dependents)."""
    return kube.delete(kind, namespace, name)
