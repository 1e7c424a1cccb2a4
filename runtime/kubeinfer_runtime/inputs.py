"""Items from inline prompts or a JSONL file (local path, file://, s3://, gs://, az://).

A JSONL line is `{"id": ..., "prompt": ..., "seed": ..., "parameters": {...}}`; only `prompt` is
required. Other top-level keys are per-item pipeline arguments too, so `{"prompt": "x", "width": 64}`
works. Ids name output objects, so they must be safe object-key names and unique.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_runtime.storage import ObjectStore
from kubeinfer_runtime.strategies.base import Item

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RESERVED_KEYS = ("id", "prompt", "seed", "parameters")


class InputError(ValueError):
    """Bad inputs: the message names the field (and the line of a JSONL file)."""


def default_id(index: int) -> str:
    return f"{index:05d}"


def check_id(item_id: str, where: str) -> str:
    if not SAFE_ID.fullmatch(item_id) or ".." in item_id:
        raise InputError(f"{where}: id {item_id!r} is not a safe object name; use letters, digits, '.', '_' and "
                         "'-' (at most 128, starting with a letter or digit)")
    return item_id


def load_items(spec: DistributedInferenceSpec) -> list[Item]:
    """Every item of the job, in order; the global index fixes each item's seed (task.seed + index)."""
    if spec.inputs.prompts is not None:
        return [Item(index=i, id=default_id(i), prompt=p, seed=spec.task.seed + i)
                for i, p in enumerate(spec.inputs.prompts)]
    if spec.inputs.uri is None:
        raise InputError("spec.inputs: set inputs.prompts or inputs.uri")
    return parse_jsonl(read_uri(spec.inputs.uri), spec.task.seed)


def read_uri(uri: str) -> str:
    """The whole file (bounded by what a job lists; stored with the model/output credentials in env)."""
    parent, name = uri.rsplit("/", 1)
    store = ObjectStore(parent, field="spec.inputs.uri")
    try:
        raw = store.get(name)
    except FileNotFoundError:
        raise InputError(f"spec.inputs.uri: {uri} does not exist") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"spec.inputs.uri: {uri} is not UTF-8 text ({err})") from None


def parse_jsonl(text: str, base_seed: int, where: str = "spec.inputs.uri") -> list[Item]:
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        item = parse_line(line, len(items), base_seed, f"{where} line {number}")
        if item.id in seen:
            raise InputError(f"{where} line {number}: duplicate id {item.id!r} (first on line {seen[item.id]})")
        seen[item.id] = number
        items.append(item)
    return items


def parse_line(line: str, index: int, base_seed: int, where: str) -> Item:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a JSON object like {{\"prompt\": \"...\"}}, got {type(raw).__name__}")
    prompt = raw.get("prompt")
    if not isinstance(prompt, str):
        raise InputError(f"{where}: \"prompt\" is required and must be a string")
    item_id = raw.get("id", default_id(index))
    if not isinstance(item_id, str | int) or isinstance(item_id, bool):
        raise InputError(f"{where}: \"id\" must be a string")
    seed = raw.get("seed", base_seed + index)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise InputError(f"{where}: \"seed\" must be a non-negative integer")
    parameters: Any = raw.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InputError(f"{where}: \"parameters\" must be an object of pipeline arguments")
    extra = {k: v for k, v in raw.items() if k not in RESERVED_KEYS}
    return Item(index=index, id=check_id(str(item_id), where), prompt=prompt, seed=seed,
                parameters={**extra, **parameters})
