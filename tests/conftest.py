"""Suite-wide options and the e2e session: `--cluster=local|kind`, and one shared local cluster per run.

The controlling pytest process owns the e2e session folder (see e2e/support/shared.py): it passes it
to the xdist workers, and stops what they started when the run ends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from e2e.support import shared
from e2e.support.options import pytest_addoption  # noqa: F401  (--cluster=local|kind)

_DIR, _OWNER = "kubeinfer_e2e_session", "kubeinfer_e2e_owner"


def pytest_configure(config: pytest.Config) -> None:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is None:  # the controlling process, or a plain run
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
