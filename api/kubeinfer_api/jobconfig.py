"""`job.json`: what the operator hands the workers (ConfigMap `<job>-job`, mounted read-only).

`kubeinfer run` builds the same object from a manifest, so local and cluster runs share one path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from kubeinfer_api.naming import JOB_FILE, JOB_MOUNT_DIR
from kubeinfer_api.plan import build_plan
from kubeinfer_api.spec import DistributedInferenceSpec, SpecModel
from kubeinfer_api.status import Plan


class JobConfig(SpecModel):
    name: str
    namespace: str = "default"
    uid: str = Field("", description="The job's UID: identifies this job's outputs in the ledger.")
    spec: DistributedInferenceSpec
    plan: Plan

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=1)


def make_job_config(name: str, spec: DistributedInferenceSpec, namespace: str = "default",
                    uid: str = "") -> JobConfig:
    return JobConfig(name=name, namespace=namespace, uid=uid, spec=spec, plan=build_plan(spec))


def load_job_config(path: str | os.PathLike[str] | None = None) -> JobConfig:
    """Read job.json (default: $KUBEINFER_JOB_FILE or the ConfigMap mount)."""
    where = Path(path or os.environ.get("KUBEINFER_JOB_FILE") or f"{JOB_MOUNT_DIR}/{JOB_FILE}")
    data: dict[str, Any] = json.loads(where.read_text())
    return JobConfig.model_validate(data)
