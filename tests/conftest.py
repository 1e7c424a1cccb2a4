"""Suite-wide options and the e2e session: `--cluster=local|kind`, and one shared local cluster per run.

The controlling pytest process owns the e2e session folder (see e2e/support/shared.py): it passes it
to the xdist workers, and stops what they started when the run ends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from _pytest.nodeid import coerce_node_id
from e2e.support import schedule, shared
from e2e.support.options import pytest_addoption  # noqa: F401  (--cluster=local|kind)

_DIR, _OWNER = "kubeinfer_e2e_session", "kubeinfer_e2e_owner"


def pytest_configure(config: pytest.Config) -> None:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is None:  # the controlling process, or a plain run
        if getattr(config.option, "dist", None) == "loadgroup":
            config.option.loadscopereorder = False  # xdist would queue the largest groups first
        shared.reap_abandoned()
        config.stash[shared.SESSION_DIR] = shared.new_session_dir()
        config.stash[shared.SESSION_OWNER] = os.getpid()
    else:
        config.stash[shared.SESSION_DIR] = Path(workerinput[_DIR])
        config.stash[shared.SESSION_OWNER] = int(workerinput[_OWNER])


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: every worker uses the controller's session folder."""
    node.workerinput[_DIR] = str(node.config.stash[shared.SESSION_DIR])
    node.workerinput[_OWNER] = node.config.stash[shared.SESSION_OWNER]


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(shared.SESSION_DIR, None)
    if getattr(config, "workerinput", None) is None and session is not None and session.exists():
        shared.teardown(session)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--dist loadgroup`: suffix each grouped test's id with its group, as pytest-xdist does, and queue the
    tests in schedule order (e2e/support/schedule.py). xdist 3.8 writes `item._nodeid`, which pytest 9 no
    longer reads (the id lives in `_id`), so without this every group's tests spread over the workers and
    module fixtures that must run once run per worker."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        group = schedule.group_of(item)
        if group and "@" not in item.nodeid:
            item._id = coerce_node_id(f"{item.nodeid}@{group}")
    items[:] = schedule.queue_order(items)
