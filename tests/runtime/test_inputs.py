"""Items from inline prompts and JSONL (local and S3): ids, seeds, per-item parameters, clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kubeinfer_api.validation import parse_spec
from kubeinfer_runtime.inputs import InputError, load_items, parse_jsonl

pytest_plugins = ["s3_fixtures"]


def spec(inputs: dict[str, Any], seed: int = 10) -> Any:
    return parse_spec({"model": {"uri": "/m"}, "task": {"seed": seed}, "inputs": inputs, "output": {"uri": "/o"}})


def test_inline_prompts_get_index_ids_and_seeds() -> None:
    items = load_items(spec({"prompts": ["a", "b", "c"]}, seed=10))
    assert [(i.index, i.id, i.prompt, i.seed) for i in items] == [
        (0, "00000", "a", 10), (1, "00001", "b", 11), (2, "00002", "c", 12)]


def test_jsonl_ids_seed_overrides_and_parameters() -> None:
    text = "\n".join([
        json.dumps({"id": "cat", "prompt": "a cat", "seed": 99, "parameters": {"height": 64}}),
        "",  # blank lines are skipped and do not shift indices
        json.dumps({"prompt": "a dog", "width": 32}),
    ])
    first, second = parse_jsonl(text, base_seed=5)
    assert (first.index, first.id, first.seed, first.parameters) == (0, "cat", 99, {"height": 64})
    assert (second.index, second.id, second.seed, second.parameters) == (1, "00001", 6, {"width": 32})


@pytest.mark.parametrize(("lines", "expected"), [
    (['{"prompt": "ok"}', '{"prompt": "broken"'], "line 2: not valid JSON"),
    (['{"prompt": "ok"}', '["a list"]'], "line 2: expected a JSON object"),
    (['{"id": "x"}'], 'line 1: "prompt" is required'),
    (['{"prompt": "a", "seed": -1}'], 'line 1: "seed" must be a non-negative integer'),
    (['{"prompt": "a", "parameters": [1]}'], 'line 1: "parameters" must be an object'),
    (['{"id": "../etc", "prompt": "a"}'], "line 1: id '../etc' is not a safe object name"),
    (['{"id": "a/b", "prompt": "a"}'], "line 1: id 'a/b' is not a safe object name"),
    (['{"id": "same", "prompt": "a"}', '', '{"id": "same", "prompt": "b"}'],
     "line 3: duplicate id 'same' (first on line 1)"),
])
def test_malformed_jsonl_names_the_line(lines: list[str], expected: str) -> None:
    with pytest.raises(InputError, match=re.escape("spec.inputs.uri " + expected)):
        parse_jsonl("\n".join(lines), base_seed=0)


def test_jsonl_from_a_local_file(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n')
    assert [i.id for i in load_items(spec({"uri": str(path)}))] == ["a", "b"]
    with pytest.raises(InputError, match=r"spec.inputs.uri: .*missing.jsonl does not exist"):
        load_items(spec({"uri": str(tmp_path / "missing.jsonl")}))


@pytest.mark.s3
def test_jsonl_from_s3(s3_server: Any, s3_bucket: str) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="in/prompts.jsonl",
                                  Body=b'{"prompt": "one"}\n{"prompt": "two", "seed": 3}\n')
    items = load_items(spec({"uri": f"s3://{s3_bucket}/in/prompts.jsonl"}, seed=1))
    assert [(i.prompt, i.seed) for i in items] == [("one", 1), ("two", 3)]
