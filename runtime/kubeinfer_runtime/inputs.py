"""Items from inline prompts or a JSONL file (local path, file://, s3://, gs://, az://).

A JSONL line is `{"id": ..., "prompt": ..., "seed": ..., "parameters": {...}}`; only `prompt` is
required. Other top-level keys are per-item pipeline arguments too, so `{"prompt": "x", "width": 64}`
works. Ids name output objects, so they must be safe object-key names and unique.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, overload

from kubeinfer_api.spec import DistributedInferenceSpec
from kubeinfer_runtime.ledger import digest_line
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


def load_items(spec: DistributedInferenceSpec) -> Sequence[Item]:
    """Every item of the job, in order; the global index fixes each item's seed (task.seed + index)."""
    if spec.inputs.prompts is not None:
        return [Item(index=i, id=default_id(i), prompt=p, seed=spec.task.seed + i)
                for i, p in enumerate(spec.inputs.prompts)]
    if spec.inputs.uri is None:
        raise InputError("spec.inputs: set inputs.prompts or inputs.uri")
    return read_jsonl(open_uri(spec.inputs.uri), spec.task.seed)


def open_uri(uri: str) -> BinaryIO:
    """The file, open for reading: a local file where it is, an object copied to a temporary file (unnamed,
    gone with the process), so a rank holds neither in memory (credentials come from the env)."""
    parent, name = uri.rsplit("/", 1)
    store = ObjectStore(parent, field="spec.inputs.uri")
    try:
        if store.local:
            return open(store.path(name), "rb")
        return store.download(name, tempfile.TemporaryFile(dir=os.environ.get("TMPDIR")))
    except FileNotFoundError:
        raise InputError(f"spec.inputs.uri: {uri} does not exist") from None


class JsonlItems(Sequence[Item]):
    """The items of a JSONL file, each read and parsed when a rank reaches it: one offset per item, not a
    million objects nor the file. Every line was checked when the file was read; `digest` covers them all."""

    def __init__(self, file: BinaryIO, size: int, offsets: array[int], base_seed: int, digest: str,
                 where: str) -> None:
        self.file, self.size, self.offsets = file, size, offsets
        self.base_seed, self.digest, self.where = base_seed, digest, where

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, index: int) -> Item: ...
    @overload
    def __getitem__(self, index: slice) -> list[Item]: ...
    def __getitem__(self, index: int | slice) -> Item | list[Item]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        start = self.offsets[index]  # IndexError past the end
        end = self.offsets[index + 1] if index + 1 < len(self.offsets) else self.size
        line = os.pread(self.file.fileno(), end - start, start).split(b"\n", 1)[0]
        return parse_line(line, index, self.base_seed, self.where)

    def __iter__(self) -> Iterator[Item]:
        return (self[i] for i in range(len(self)))

    def line_number(self, index: int) -> int:
        return sum(piece.count(b"\n") for piece in chunks(self.file, self.offsets[index])) + 1


def chunks(file: BinaryIO, stop: int, size: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes [0, stop), a megabyte at a time."""
    for start in range(0, stop, size):
        yield os.pread(file.fileno(), min(size, stop - start), start)


def parse_jsonl(text: str | bytes, base_seed: int, where: str = "spec.inputs.uri") -> JsonlItems:
    """`read_jsonl` of text in memory (written to a temporary file first)."""
    file = tempfile.TemporaryFile(dir=os.environ.get("TMPDIR"))  # noqa: SIM115 (the items keep it open)
    file.write(text.encode() if isinstance(text, str) else text)
    file.flush()
    return read_jsonl(file, base_seed, where)


def read_jsonl(file: BinaryIO, base_seed: int, where: str = "spec.inputs.uri") -> JsonlItems:
    """Check every line (JSON, fields, safe and unique ids) in one pass that keeps no item."""
    size = os.fstat(file.fileno()).st_size
    lines = sum(piece.count(b"\n") for piece in chunks(file, size)) + 1  # sized once: growing copies them
    offsets, id_hashes, digest = array("Q", bytes(8 * lines)), array("Q", bytes(8 * lines)), hashlib.sha256()
    count = position = 0
    file.seek(0)
    for number, line in enumerate(file, start=1):
        if line.strip():
            try:
                item = parse_line(line, count, base_seed, f"{where} line {number}")
            except UnicodeDecodeError as err:
                raise InputError(f"{where} line {number}: not UTF-8 text ({err})") from None
            offsets[count] = position
            id_hashes[count] = int.from_bytes(hashlib.blake2b(item.id.encode(), digest_size=8).digest(), "little")
            count += 1
            digest.update(digest_line(item))
        position += len(line)
    del offsets[count:], id_hashes[count:]
    items = JsonlItems(file, size, offsets, base_seed, digest.hexdigest(), where)
    check_unique_ids(items, id_hashes, where)
    return items


def check_unique_ids(items: JsonlItems, id_hashes: array[int], where: str) -> None:
    """Equal ids have equal 64-bit hashes: sort the hashes (8 bytes per item), compare ids only where two
    hashes meet, and name the first repeated line as a set of every id would."""
    import numpy as np

    hashes = np.frombuffer(id_hashes, dtype=np.uint64)
    ordered = np.sort(hashes)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    del ordered
    if not len(repeated):
        return
    candidates = np.nonzero(np.isin(hashes, repeated))[0].tolist()  # every item whose hash meets another's
    seen: dict[str, int] = {}
    for index in candidates:
        item_id = items[index].id
        if item_id in seen:
            raise InputError(f"{where} line {items.line_number(index)}: duplicate id {item_id!r} "
                             f"(first on line {items.line_number(seen[item_id])})")
        seen[item_id] = index


def parse_line(line: str | bytes, index: int, base_seed: int, where: str) -> Item:
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
