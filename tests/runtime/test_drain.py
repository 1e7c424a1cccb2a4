"""SIGTERM drains a data-parallel job: what the ranks finished is committed, then they exit with `Drained:`.

`kubeinfer run --nproc 2` (torchrun, two ranks) gets SIGTERM as a pod does when it is preempted or
evicted. Each item is held back half a second (the test-only item delay) so the signal lands mid-run.
Commit records are written every few seconds, so a rank that died at once would leave finished outputs
unrecorded; a drained one records every output it wrote. A second run resumes without recomputing them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from strategy_harness import REPO
from test_elastic import CHUNK_ENV, manifest_texts, spec

from kubeinfer_runtime.ledger import Ledger
from kubeinfer_runtime.rank import ITEM_DELAY_ENV
from kubeinfer_runtime.storage import ObjectStore

pytestmark = pytest.mark.runtime
COUNT = 16


def run(job: Path, out: Path, delay: float) -> subprocess.Popen[str]:
    env = {**os.environ, ITEM_DELAY_ENV: str(delay), CHUNK_ENV: "4", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("api", "runtime"))}
    argv = [sys.executable, "-m", "kubeinfer_runtime.cli", "run", str(job), "--nproc", "2", "--output", str(out)]
    return subprocess.Popen(argv, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def outputs(out: Path) -> set[str]:
    return {f"items/{p.name}" for p in (out / "items").glob("*.jsonl")}


@pytest.mark.parametrize("elastic", [False, True], ids=["static", "elastic"])
def test_sigterm_commits_what_was_finished_and_the_next_run_resumes(gpt2_dir: Path, tmp_path: Path,
                                                                    elastic: bool) -> None:
    out, job = tmp_path / "out", tmp_path / "job.yaml"
    body = spec(gpt2_dir, out, COUNT, nodes=1)
    body["strategy"]["elastic"] = elastic
    job.write_text(json.dumps({"apiVersion": "kubeinfer.io/v1alpha1", "kind": "DistributedInference",
                               "metadata": {"name": "drain"}, "spec": body}))
    first = run(job, out, delay=0.5)
    try:
        deadline = time.monotonic() + 300
        while len(outputs(out)) < 2:
            assert time.monotonic() < deadline and first.poll() is None, "no output before the signal"
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)
        log = first.communicate(timeout=120)[0]
    finally:
        first.kill()
    assert first.returncode != 0, log[-3000:]
    assert "Drained: SIGTERM" in log, log[-3000:]
    assert "SIGKILL" not in log, "the ranks drained on their own, nobody had to kill them"
    ledger = Ledger(ObjectStore(str(out)))
    committed = {e.key: e for e in ledger.entries()}
    assert 2 <= len(committed) < COUNT, log[-3000:]
    assert set(committed) == outputs(out), "every output written before the signal is committed"

    second = run(job, out, delay=0)
    log = second.communicate(timeout=300)[0]
    assert second.returncode == 0, log[-3000:]
    entries, _ = manifest_texts(out)
    assert [e["index"] for e in entries] == list(range(COUNT)), "every item exactly once"
    again = {e["key"]: e["committed_at"] for e in entries if e["key"] in committed}
    assert again == {key: e.committed_at for key, e in committed.items()}, "drained items were not recomputed"
