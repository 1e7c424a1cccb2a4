"""The generated CRD in a real kube-apiserver: bad manifests are rejected with field-level messages.

The unit table of tests/unit/test_api_validation.py (the Python mirror of the CEL rules) is replayed
here against the apiserver, so Python and CEL cannot drift apart: every case must be rejected by
both, naming the same field, and every CEL rule of the CRD must be hit by some case.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import unit.test_api_validation as unit_table
import unit.test_examples as example_table
import yaml

from e2e.support.cluster import Cluster, job_manifest, wait_for
from kubeinfer_api.crd import build_crd
from kubeinfer_api.spec import IMMUTABLE_FIELDS, DistributedInferenceSpec
from kubeinfer_api.validation import SpecError, parse_manifest, parse_spec

pytestmark = pytest.mark.e2e
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
spec = unit_table.spec


def _unit_cases() -> list[dict[str, Any]]:
    """The override dicts of the unit test's bad-spec table (its `parametrize` argument values)."""
    marks = [m for m in unit_table.test_bad_specs_name_the_field.pytestmark if m.name == "parametrize"]
    return [overrides for overrides, _expected in marks[0].args[1]]


UNIT_CASES = _unit_cases()

# Rejections only the apiserver can show (schema bounds, enums, unknown fields, names), each with
# the text its message must contain. `spec(...)` overrides, or a whole manifest.
APISERVER_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("port below 1024", spec(rendezvous__port=80), "spec.rendezvous.port"),
    ("timeout too short", spec(rendezvous__timeoutSeconds=5), "spec.rendezvous.timeoutSeconds"),
    ("too many restarts", spec(failurePolicy__maxRestarts=101), "spec.failurePolicy.maxRestarts"),
    ("too many gpus", spec(workers__gpusPerNode=17), "spec.workers.gpusPerNode"),
    ("batch size 0", spec(strategy__batchSize=0), "spec.strategy.batchSize"),
    ("negative seed", spec(task__seed=-1), "spec.task.seed"),
    ("too many prompts", spec(inputs__prompts=["p"] * 1001), "spec.inputs.prompts"),
    ("no prompts", spec(inputs__prompts=[]), "spec.inputs.prompts in body should have at least 1 items"),
    ("endpoint not http", spec(output__endpointUrl="ftp://minio"), "spec.output.endpointUrl"),
    ("pipeline class", spec(model__pipeline="1Flux"), "spec.model.pipeline"),
    ("task enum", spec(task__type="image-to-video"), "spec.task.type"),
    ("format enum", spec(output__format="gif"), "spec.output.format"),
    ("backend enum", spec(rendezvous__backend="mpi"), "spec.rendezvous.backend"),
    ("ring degree bound", spec(strategy__context={"ringDegree": 65}), "spec.strategy.context.ringDegree"),
    ("unknown spec field", spec(replicas=2), 'unknown field "spec.replicas"'),
    ("unknown resources field", spec(workers__resources={"limit": {"cpu": 1}}),
     'unknown field "spec.workers.resources.limit"'),
    ("model required", {k: v for k, v in spec().items() if k != "model"}, "spec.model: Required value"),
    ("output uri required", spec(output={"format": "png"}), "spec.output.uri: Required value"),
]
NAME_CASES = [
    ("name too long", "a" * 45, "metadata.name: at most 44 characters"),
    ("name not a DNS name", "Bad_Name", "metadata.name"),
]


@pytest.fixture(scope="module")
def ns(crd: Cluster) -> Iterator[str]:
    name = f"validation-{uuid.uuid4().hex[:5]}"
    crd.kubectl("create", "namespace", name)
    yield name
    crd.delete_namespace(name)


def dry_run(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> tuple[bool, str]:
    """Server-side dry-run create with strict field validation: (accepted, stdout or error)."""
    result = cluster.kubectl("create", "--dry-run=server", "--validate=strict", "-n", namespace, "-o", "json",
                             "-f", "-", input=json.dumps(manifest), check=False)  # fmt: skip
    return result.returncode == 0, result.stdout if result.returncode == 0 else result.stderr


def test_unit_table_is_rejected_by_the_apiserver_naming_the_same_field(crd: Cluster, ns: str) -> None:
    mismatches = []
    for overrides in UNIT_CASES:
        with pytest.raises(SpecError) as python_error:
            parse_spec(spec(**overrides))
        accepted, message = dry_run(crd, ns, job_manifest("bad", spec(**overrides)))
        fields = [problem.split(":", 1)[0].removeprefix("spec.") for problem in python_error.value.problems]
        if accepted or not all(field in message for field in fields):
            mismatches.append(f"{overrides}: python names {fields}; apiserver: {message.strip()}")
    assert not mismatches, "Python and CEL disagree:\n" + "\n".join(mismatches)


@pytest.mark.parametrize(("manifest_spec", "expected"), [c[1:] for c in APISERVER_CASES],
                         ids=[c[0] for c in APISERVER_CASES])
def test_schema_rejects_with_field_message(crd: Cluster, ns: str, manifest_spec: dict[str, Any], expected: str) -> None:
    accepted, message = dry_run(crd, ns, job_manifest("bad", manifest_spec))
    assert not accepted, f"apiserver accepted a bad spec: {manifest_spec}"
    assert expected in message, message


@pytest.mark.parametrize(("name", "expected"), [c[1:] for c in NAME_CASES], ids=[c[0] for c in NAME_CASES])
def test_bad_names_rejected(crd: Cluster, ns: str, name: str, expected: str) -> None:
    accepted, message = dry_run(crd, ns, job_manifest(name, spec()))
    assert not accepted and expected in message, message
    with pytest.raises(SpecError):  # and `kubeinfer run` rejects it too
        parse_manifest(job_manifest(name, spec()))


def _cel_messages(node: Any) -> set[str]:
    """Every CEL message in the CRD's schema except the generated immutability rules."""
    found: set[str] = set()
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            if rule["rule"] != "self == oldSelf":
                found.add(rule["message"])
        for value in node.values():
            found |= _cel_messages(value)
    elif isinstance(node, list):
        for value in node:
            found |= _cel_messages(value)
    return found


def test_every_cel_rule_is_exercised(crd: Cluster, ns: str) -> None:
    # A CEL rule added to spec.py without a case in the unit table fails here.
    seen = ""
    for overrides in UNIT_CASES:
        seen += dry_run(crd, ns, job_manifest("bad", spec(**overrides)))[1]
    seen += dry_run(crd, ns, job_manifest("a" * 45, spec()))[1]
    untested = {m for m in _cel_messages(build_crd()) if m not in seen}
    assert not untested, f"CEL rules no case triggers: {sorted(untested)}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_accepted_by_both(crd: Cluster, ns: str, example: Path) -> None:
    manifest = yaml.safe_load(example.read_text())
    parse_manifest(manifest)
    accepted, message = dry_run(crd, ns, manifest)
    assert accepted, message


EXAMPLE_BAD = [case for case in example_table.BAD if case[4] != "builtin"]


@pytest.mark.parametrize("case", EXAMPLE_BAD, ids=[case[0] for case in EXAMPLE_BAD])
def test_bad_example_edits_rejected(crd: Cluster, ns: str, case: tuple[str, str, dict[str, Any], str, str]) -> None:
    # The examples' bad-edit table (tests/unit/test_examples.py), replayed against the apiserver.
    _id, base, edits, _python_message, where = case
    accepted, message = dry_run(crd, ns, example_table.edited(base, edits))
    assert not accepted, f"apiserver accepted {edits}"
    kind, _, detail = where.partition(":")
    expected = {"cel": detail, "schema": detail, "strict": "unknown field"}[kind]
    assert expected in message, message


def _prune(value: Any) -> Any:
    """Drop None and empty containers (pydantic writes them, the apiserver leaves them absent)."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    return value


def test_defaults_filled_in_like_pydantic(crd: Cluster, ns: str) -> None:
    accepted, out = dry_run(crd, ns, job_manifest("minimal", spec()))
    assert accepted, out
    served = json.loads(out)["spec"]
    expected = DistributedInferenceSpec.model_validate(spec()).model_dump(by_alias=True, mode="json")
    assert _prune(served) == _prune(expected)
    assert served["workers"]["nodes"] == 1 and served["rendezvous"]["port"] == 29500


@pytest.fixture
def suspended_job(crd: Cluster, ns: str) -> Iterator[str]:
    """A stored job that never runs (suspended), to update."""
    manifest = job_manifest("immutable", {**spec(), "suspend": True})
    crd.apply(manifest, ns)
    yield "immutable"
    crd.kubectl("delete", "dinf", "immutable", "-n", ns, "--ignore-not-found")


CHANGES = {
    "model": {"uri": "s3://models/other"},
    "task": {"seed": 7},
    "inputs": {"prompts": ["another"]},
    "strategy": {"batchSize": 2},
    "runtime": {"attentionBackend": "native"},
    "workers": {"nodes": 3},
    "rendezvous": {"port": 29600},
    "output": {"uri": "s3://out/elsewhere/"},
    "scheduling": {"gang": "Disabled"},
}


def test_spec_immutable_but_suspend_mutable(crd: Cluster, ns: str, suspended_job: str) -> None:
    assert set(CHANGES) == set(IMMUTABLE_FIELDS)
    for field, change in CHANGES.items():
        patch = json.dumps({"spec": {field: change}})
        result = crd.kubectl("patch", "dinf", suspended_job, "-n", ns, "--type=merge", "-p", patch, check=False)
        assert result.returncode != 0, f"spec.{field} changed on a stored job"
        assert f"spec.{field} is immutable; delete and recreate the job" in result.stderr, result.stderr
    for value in (False, True):
        crd.kubectl("patch", "dinf", suspended_job, "-n", ns, "--type=merge", "-p",
                    json.dumps({"spec": {"suspend": value}}))  # fmt: skip
        assert crd.job(suspended_job, ns)["spec"]["suspend"] is value


def test_printer_columns_show_state_and_progress(crd: Cluster, ns: str, suspended_job: str) -> None:
    status = {"state": "Running", "progress": {"total": 10, "succeeded": 4, "percent": 40}, "restarts": 1,
              "message": "2 of 2 workers running (attempt 1)"}
    crd.kubectl("patch", "dinf", suspended_job, "-n", ns, "--subresource=status", "--type=merge", "-p",
                json.dumps({"status": status}))  # fmt: skip
    # An operator may rewrite the status at any moment: the row must match the stored object, so the row is
    # taken between two reads of the object that find the same resourceVersion.
    table, job = wait_for(lambda: consistent_row(crd, ns, suspended_job), "a row read while the job did not change", 30)
    header = table[0].split()
    assert header == ["NAME", "STATE", "SUCCEEDED", "TOTAL", "PROGRESS", "NODES", "RESTARTS", "AGE", "MESSAGE"]
    row = table[1].split(None, len(header) - 1)  # the message, last, has spaces
    observed = job.get("status", {})
    shown = dict(zip(header, row, strict=True))
    assert shown["NAME"] == suspended_job and shown["NODES"] == "1"
    assert shown["MESSAGE"] == str(observed.get("message", "<none>"))
    assert shown["STATE"] == str(observed.get("state", "<none>"))
    assert shown["RESTARTS"] == str(observed.get("restarts", "<none>"))
    assert shown["SUCCEEDED"] == str(observed.get("progress", {}).get("succeeded", "<none>"))


def consistent_row(crd: Cluster, ns: str, name: str) -> tuple[list[str], dict[str, Any]] | None:
    """`kubectl get`'s table and the object it shows, or None when the object changed in between."""
    before = crd.job(name, ns)
    table = crd.kubectl("get", "dinf", name, "-n", ns).stdout.splitlines()
    after = crd.job(name, ns)
    same = before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]
    return (table, after) if same else None
