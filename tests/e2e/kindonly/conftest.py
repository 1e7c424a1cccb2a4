"""Tests only a real CNI can pass (NetworkPolicy enforcement): deselected unless `--cluster=kind`.

The local node agent wires pods to a plain bridge and enforces no NetworkPolicy, so these tests are
deselected there (reported as deselected, never as passed); hack/kind-e2e.sh lists them for kind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.support.options import cluster_kind

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if cluster_kind(config) == "kind":
        return
    mine = [item for item in items if HERE in item.path.resolve().parents]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [item for item in items if item not in mine]
