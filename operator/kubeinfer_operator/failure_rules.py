"""What a restart can fix: the user's failurePolicy.rules first, then the built-in rules. Pure.

Built in (JobSet's failurePolicy.rules are the model): a failure no restart fixes (the model is
missing, storage access is denied or the bucket is missing, the inputs are invalid, the output prefix
holds another job's outputs) fails the job at once instead of spending maxRestarts; a disruption
(preemption, eviction, drain) restarts without counting; anything else restarts, counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubeinfer_api.spec import DistributedInferenceSpec, FailureAction
from kubeinfer_operator.observe import Failure


@dataclass(frozen=True)
class Rule:
    action: FailureAction
    why: str
    reasons: frozenset[str] = frozenset()
    patterns: tuple[str, ...] = ()

    def matches(self, failure: Failure) -> bool:
        """Every given criterion holds: the reason is listed, and one pattern is found in the message."""
        if self.reasons and failure.reason not in self.reasons:
            return False
        return not self.patterns or any(_search(p, failure.message) for p in self.patterns)


BUILT_IN = (
    Rule("FailJob", "the model is missing", frozenset({"ModelError"}), (
        r"holds no files", r"is empty", r"is not a directory", r"not found", r"unsupported scheme",
        r"is not hf://", r"not in the local Hugging Face cache")),
    Rule("FailJob", "storage access is denied or the bucket is missing", frozenset({"StorageError"}), (
        r"access to .* denied", r"does not exist")),
    Rule("FailJob", "the inputs are invalid", frozenset({"InputError"})),
    Rule("FailJob", "the output prefix holds another job's outputs", frozenset({"FingerprintMismatch"})),
    # The reasons a worker may give to say so itself.
    Rule("FailJob", "the worker says no restart can fix it",
         frozenset({"ModelNotFound", "AccessDenied", "InvalidInput", "PermanentFailure"})),
)


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:  # validation rejects bad patterns; a stored one never crashes the loop
        return False


def user_rules(spec: DistributedInferenceSpec) -> list[Rule]:
    return [Rule(r.action, f"failurePolicy.rules[{i}]" + (f" {r.name!r}" if r.name else ""),
                 frozenset(r.on_reasons or ()), tuple(r.on_message_patterns or ()))
            for i, r in enumerate(spec.failure_policy.rules)]


def classify(spec: DistributedInferenceSpec, failure: Failure) -> tuple[FailureAction, str]:
    """(action, why): the first matching user rule, then disruptions, then the built-in rules."""
    for rule in user_rules(spec):
        if rule.matches(failure):
            return rule.action, rule.why
    if failure.disruption:
        return "RestartJobAndIgnoreMaxRestarts", "a disruption, not a failure of the job"
    for rule in BUILT_IN:
        if rule.matches(failure):
            return rule.action, rule.why
    return "RestartJob", "a restart may fix it"
