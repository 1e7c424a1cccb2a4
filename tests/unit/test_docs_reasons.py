"""The documented Failed and Restarting reasons are the ones the operator sets.

The operator's code is read (not run) for where each `Reason` constant goes:
- Failed: `set_condition(status, "Failed", ...)` with the reason, a `Verdict(False, ...)`/`Outcome(False,
  ...)`-style result (first argument False: no restart, not complete) carrying it, or carrying
  `<name>.reason` where `<name>` comes from a function that builds `Failure(reason=Reason.X)`;
- lifecycle: `set_condition` of Created/Running/Complete/Suspended, or a result whose first argument is True;
- Restarting: every other reason (failures the operator observes, and those the worker writes in its
  termination message, such as RendezvousTimeout).
A reason added to `kubeinfer_api.status.Reason` or moved between these must be documented in
docs/reference/status.md and docs/operations/troubleshooting.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from kubeinfer_api.status import CONDITION_TYPES, Reason

REPO = Path(__file__).resolve().parents[2]
OPERATOR = REPO / "operator" / "kubeinfer_operator"
LIFECYCLE_CONDITIONS = set(CONDITION_TYPES) - {"Failed", "Restarting"}
ALL_REASONS = {v for k, v in vars(Reason).items() if k.isupper()}


def _reason(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Reason":
        value: str = getattr(Reason, node.attr)
        return value
    return None


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _calls(node: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call)]


def _built_failure_reasons(function: ast.FunctionDef) -> set[str]:
    """Reasons of the `Failure(reason=Reason.X)` a function builds."""
    return {r for call in _calls(function) for kw in call.keywords if kw.arg == "reason"
            for r in [_reason(kw.value)] if r}


def _source_functions(function: ast.FunctionDef, variable: str) -> set[str]:
    """Names of the functions whose result is assigned to `variable` in `function`."""
    return {_name(call) for node in ast.walk(function) if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets)
            for call in _calls(node.value)}


def operator_reasons() -> tuple[set[str], set[str]]:
    """(Failed reasons, lifecycle reasons) as the operator's code sets them."""
    trees = [ast.parse(path.read_text()) for path in sorted(OPERATOR.rglob("*.py"))]
    functions = [f for tree in trees for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)]
    failed: set[str] = set()
    lifecycle: set[str] = set()
    for function in functions:
        for call in _calls(function):
            reasons = {r for r in map(_reason, call.args) if r}
            literals = [a.value for a in call.args if isinstance(a, ast.Constant)]
            first = call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) else None
            if (_name(call) == "set_condition" and "Failed" in literals) or first is False:
                failed |= reasons
            if (_name(call) == "set_condition" and LIFECYCLE_CONDITIONS & set(literals)) or first is True:
                lifecycle |= reasons
            if first is False:
                for arg in call.args:
                    if isinstance(arg, ast.Attribute) and arg.attr == "reason" and isinstance(arg.value, ast.Name):
                        sources = _source_functions(function, arg.value.id)
                        for source in (f for f in functions if f.name in sources):
                            failed |= _built_failure_reasons(source)
    return failed, lifecycle


def documented(page: Path, heading: str | None = None) -> set[str]:
    """Reasons named in the first column of the tables of a page (or of one of its sections)."""
    text = page.read_text()
    if heading is not None:
        text = text.split(f"\n{heading}\n", 1)[1]
        text = re.split(r"\n#{1,6} ", text, maxsplit=1)[0]
    return set(re.findall(r"^\| `([A-Za-z]+)` \|", text, re.MULTILINE))


def test_the_analysis_sees_the_known_reasons() -> None:
    """Guards the analysis itself: if the operator is restructured, this says why the next test fails."""
    failed, lifecycle = operator_reasons()
    assert {Reason.INVALID_SPEC, Reason.MAX_RESTARTS_EXCEEDED, Reason.TOO_MANY_FAILED_ITEMS} <= failed
    assert {Reason.CHILDREN_CREATED, Reason.WORKERS_RUNNING, Reason.ITEMS_COMPLETE} <= lifecycle
    assert failed & lifecycle == set(), "a reason is both a failure and a normal transition"


def test_failed_and_restarting_reasons_in_the_docs_are_the_codes() -> None:
    failed, lifecycle = operator_reasons()
    restarting = ALL_REASONS - failed - lifecycle
    status = REPO / "docs" / "reference" / "status.md"
    assert documented(status, "### Failed") == failed
    assert documented(status, "### Restarting") == restarting
    assert documented(REPO / "docs" / "operations" / "troubleshooting.md", "## Failure reasons and what to do") == (
        failed | restarting)
    on_the_page = set(re.findall(r"`([A-Za-z]+)`", status.read_text()))
    assert ALL_REASONS - on_the_page == set(), "every reason is on the page"
