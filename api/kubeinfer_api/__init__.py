"""The kubeinfer API: spec models, CRD generation, planning and the worker contracts.

Imports nothing heavier than pydantic: the operator image has no torch, the runtime image no kopf.
"""

from __future__ import annotations

GROUP = "kubeinfer.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DistributedInference"
PLURAL = "distributedinferences"
SINGULAR = "distributedinference"
SHORT_NAMES = ["dinf"]
