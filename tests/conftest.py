"""Suite-wide options: `--cluster=local|kind` selects where the end-to-end tests run."""

from e2e.support.options import pytest_addoption  # noqa: F401  (--cluster=local|kind)
