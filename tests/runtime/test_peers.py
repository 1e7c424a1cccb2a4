"""Weight fan-out between pods: a child streams the model from its parent while the parent fetches it, storage
serves it about once, and a parent that is gone costs a fallback to storage, not the job."""

from __future__ import annotations

import filecmp
import http.client
import threading
from pathlib import Path
from typing import Any

import pytest
from run_harness import upload_dir
from strategy_harness import free_port

from kubeinfer_runtime.modelio.peers import Offers, PeerServer, parent
from kubeinfer_runtime.modelio.remote import FanOut, Fetched, fetch_remote
from localcluster.s3_traffic import settled_bytes_sent

pytest_plugins = ["s3_fixtures"]


def model_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def same_files(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    ours = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and not p.name.startswith("."))
    return files == ours and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def test_the_tree_bounds_what_each_pod_sends() -> None:
    parents = [parent(i) for i in range(8)]
    assert parents == [None, 0, 0, 1, 1, 2, 2, 3]
    assert max(parents.count(p) for p in range(8)) == 2


def test_the_server_serves_only_offered_files_by_range(tmp_path: Path) -> None:
    server = PeerServer(Offers(), free_port(), serve_wait=0.2).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        for path, headers, status in [("/etc/passwd", {}, 400), ("/v1/models/abc/config.json", {}, 400),
                                      ("/v1/models/abc/../../etc/passwd", {"Range": "bytes=0-9"}, 404),
                                      ("/v1/models/abc/config.json", {"Range": "bytes=0-9"}, 404)]:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == status, path
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.s3
def test_three_pods_read_the_model_from_storage_once(s3_server: Any, s3_bucket: str, flux_dir: Path,
                                                     tmp_path: Path) -> None:
    """Pods 0, 1 and 2 of a job, side by side: 1 and 2 stream from 0 while 0 is still fetching."""
    upload_dir(s3_server.client(), s3_bucket, "m", flux_dir)
    uri = f"s3://{s3_bucket}/m"
    offers = Offers()
    server = PeerServer(offers, free_port()).start()
    port = server.server_address[1]
    results: dict[int, Fetched] = {}

    def pod(index: int) -> None:
        fanout = FanOut(offers=offers, port=port) if index == 0 else FanOut(parent_host="127.0.0.1", port=port)
        results[index] = fetch_remote(uri, tmp_path / f"pod{index}", durable=False, fanout=fanout)

    try:
        threads = [threading.Thread(target=pod, args=(i,)) for i in (1, 2, 0)]  # children first: they wait
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    size = model_bytes(flux_dir)
    assert results[0].bytes_by_source == {"storage": size}
    assert results[1].bytes_by_source == results[2].bytes_by_source == {"peers": size}
    assert all(same_files(flux_dir, results[i].path) for i in range(3))
    sent = settled_bytes_sent(s3_server.env(), s3_bucket)  # plus three listings' XML
    assert size <= sent < size * 1.05, f"storage sent {sent} bytes for a {size}-byte model and three pods"


@pytest.mark.s3
def test_a_parent_that_never_answers_costs_a_fallback_to_storage(
        s3_server: Any, s3_bucket: str, flux_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upload_dir(s3_server.client(), s3_bucket, "m", flux_dir)
    monkeypatch.setenv("KUBEINFER_MODEL_PEER_WAIT_SECONDS", "1")
    fetched = fetch_remote(f"s3://{s3_bucket}/m", tmp_path, durable=False,
                           fanout=FanOut(parent_host="127.0.0.1", port=free_port()))  # nobody listens there
    assert fetched.bytes_by_source == {"storage": model_bytes(flux_dir)}
    assert same_files(flux_dir, fetched.path)
