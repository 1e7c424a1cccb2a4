"""The suite's xdist queue order (e2e/support/schedule.py) on items pytest collects from a small test tree."""

from __future__ import annotations

import pytest
from e2e.support.schedule import SERIAL_GROUP, group_of, queue_order

pytest_plugins = ["pytester"]

MARKED = "import pytest\npytestmark = [{}]\n"
#: Module names no other test module has: pytester collects in this process, where tests/ is importable.
TREE = {
    "tests/unit/test_sched_u.py": "def test_u(): pass\n",
    "tests/e2e/test_sched_plain.py": "import pytest\ndef test_a(): pass\n"
                                     "@pytest.mark.serial\ndef test_outage(): pass\n"
                                     "@pytest.mark.long(seconds=40)\ndef test_long40(): pass\n"
                                     "@pytest.mark.long(seconds=80)\ndef test_long80(): pass\n",
    "tests/e2e/test_sched_grouped.py": MARKED.format("pytest.mark.xdist_group('g')") + "def test_g(): pass\n",
    "tests/e2e/test_sched_chart.py": MARKED.format("pytest.mark.serial, pytest.mark.xdist_group('chart')")
                                     + "def test_c1(): pass\ndef test_c2(): pass\n",
    "tests/images/test_sched_i.py": MARKED.format("pytest.mark.images, pytest.mark.xdist_group('images')")
                                    + "def test_i(): pass\n",
    "tests/runtime/test_sched_r.py": "def test_r(): pass\n",
}


def test_serial_tests_are_one_unit_first_then_images_runtime_e2e_groups_long_e2e_unit(
        pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    serial: x\n    images: x\n    long: x\n")
    for path, source in TREE.items():
        pytester.path.joinpath(path).parent.mkdir(parents=True, exist_ok=True)
        pytester.path.joinpath(path).write_text(source)
    items, result = pytester.inline_genitems("tests")
    assert not result.getfailedcollections()
    ordered = queue_order(items)
    assert [item.nodeid.split("::")[1] for item in ordered] == [
        "test_c1", "test_c2", "test_outage",  # serial, whatever their own group: one unit
        "test_i", "test_r", "test_g", "test_long80", "test_long40", "test_a", "test_u"]  # long: longest first
    assert {group_of(item) for item in ordered[:3]} == {SERIAL_GROUP}
    assert [group_of(item) for item in ordered[3:]] == ["images", None, "g", None, None, None, None]
