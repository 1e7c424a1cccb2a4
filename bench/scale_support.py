"""Tools of bench/operator_scale.py: child watches, a paced creator, an RSS sampler, stats, reports.

Times are ``time.monotonic()`` on the bench side: a create is stamped just before its POST, a child
when its first watch event arrives here (creationTimestamp has only 1 s resolution).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
from kubernetes.client import ApiException
from kubernetes.watch.watch import iter_resp_lines

Obj = dict[str, Any]
ListFn = Callable[..., Any]


def owner_name(obj: Obj, owner_kind: str) -> str | None:
    """Name of the object's controller of kind ``owner_kind`` (None if it has none)."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == owner_kind and ref.get("controller"):
            return str(ref["name"])
    return None


class ChildWatch(threading.Thread):
    """Watches one kind in one namespace; records when a child of each owner was first seen."""

    def __init__(self, kind: str, list_fn: ListFn, namespace: str, owner_kind: str) -> None:
        super().__init__(name=f"watch-{kind}", daemon=True)
        self.kind, self.list_fn, self.namespace, self.owner_kind = kind, list_fn, namespace, owner_kind
        self.first_seen: dict[str, float] = {}
        self.events = 0
        self.requests = 0  # list and watch calls: this bench's own load on the apiserver
        self.errors: list[str] = []
        self._stop_event = threading.Event()
        self._ready = threading.Event()

    def start_and_wait(self, timeout: float = 30.0) -> ChildWatch:
        """Start and return once the initial list is done, so no child can be missed."""
        self.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self.kind} watch did not start: {self.errors}")
        return self

    def stop(self) -> None:
        self._stop_event.set()

    def _note(self, obj: Obj, now: float) -> None:
        owner = owner_name(obj, self.owner_kind)
        if owner is not None and owner not in self.first_seen:
            self.first_seen[owner] = now

    def _relist(self) -> str:
        self.requests += 1
        listing = json.loads(self.list_fn(self.namespace, _preload_content=False).data)
        now = time.monotonic()
        for item in listing.get("items") or []:
            self._note(item, now)
        return str(listing["metadata"]["resourceVersion"])

    def run(self) -> None:
        version = ""
        while not self._stop_event.is_set():
            try:
                if not version:
                    version = self._relist()
                    self._ready.set()
                version = self._watch(version)
            except ApiException as err:
                self.errors.append(f"{err.status} {err.reason}")
                version = "" if err.status == 410 else version
                time.sleep(0.5)
            except Exception as err:  # a dropped connection: resume from the last version
                self.errors.append(repr(err))
                time.sleep(0.5)

    def _watch(self, version: str) -> str:
        """One watch request (short, so stop() is honoured); returns the last resourceVersion seen."""
        self.requests += 1
        resp = self.list_fn(self.namespace, watch=True, resource_version=version, timeout_seconds=10,
                            allow_watch_bookmarks=True, _preload_content=False)
        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                now = time.monotonic()
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise ApiException(status=obj.get("code", 500), reason=obj.get("message", ""))
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if event.get("type") == "ADDED":
                    self.events += 1
                    self._note(obj, now)
                if self._stop_event.is_set():
                    break
        finally:
            resp.close()
            resp.release_conn()
        return version


def create_paced(create: Callable[[str], None], names: list[str], rate: float,
                 workers: int = 4) -> tuple[dict[str, float], list[str]]:
    """Call ``create(name)`` for each name, started on a fixed schedule of ``rate`` per second.

    Returns (name -> monotonic time just before its request, errors). A few threads keep the
    schedule when one request is slow; a request that cannot start on time starts late (recorded).
    """
    sent: dict[str, float] = {}
    errors: list[str] = []

    def one(name: str) -> None:
        sent[name] = time.monotonic()
        try:
            create(name)
        except Exception as err:
            errors.append(f"{name}: {err!r}"[:300])

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="create") as pool:
        for i, name in enumerate(names):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, name)
    return sent, errors


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (via /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                continue
    return out


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM); 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class RssSampler:
    """Samples the summed VmRSS of a process tree every ``interval`` s in a thread; keeps the peak."""

    pid: int
    interval: float = 0.2
    peak_kib: int = 0
    last_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> int:
        self.last_kib = sum(status_kib(p, "VmRSS") for p in process_tree(self.pid))
        self.peak_kib = max(self.peak_kib, self.last_kib)
        return self.last_kib

    def start(self) -> RssSampler:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.sample()

        self.sample()
        self._thread = threading.Thread(target=loop, name="rss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling; the peak is also checked against the kernel's own high-water mark."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        hwm = sum(status_kib(p, "VmHWM") for p in process_tree(self.pid))
        self.peak_kib = max(self.peak_kib, hwm)
        return self.peak_kib


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def latency_stats(sent: dict[str, float], seen: dict[str, float]) -> dict[str, float]:
    """p50/p99/max of seen - sent in seconds, over the names that have both."""
    lat = [seen[n] - sent[n] for n in sent if n in seen]
    return {"p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99), "max_s": max(lat, default=math.nan)}


def by_tenth(sent: dict[str, float], seen: dict[str, float]) -> list[float]:
    """p50 latency of each tenth of the creates in creation order: flat if it does not grow with count."""
    ordered = sorted(sent, key=sent.__getitem__)
    size = max(1, math.ceil(len(ordered) / 10))
    chunks = [ordered[i:i + size] for i in range(0, len(ordered), size)]
    return [round(percentile((seen[n] - sent[n] for n in chunk if n in seen), 50), 3) for chunk in chunks]


_LABEL = re.compile(r'(verb|flow_schema)="([^"]*)"')


def apiserver_counters(server: str, ca: Path, client_stem: Path) -> dict[str, float]:
    """Requests the apiserver has served: total and by verb (WATCH excluded), and by APF flow schema."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(f"{client_stem}.crt", f"{client_stem}.key")
    with urllib.request.urlopen(f"{server}/metrics", timeout=30, context=context) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        metric = line.split("{", 1)[0]
        if metric not in ("apiserver_request_total", "apiserver_flowcontrol_dispatched_requests_total"):
            continue
        labels, value = dict(_LABEL.findall(line)), float(line.rsplit(" ", 1)[1])
        if "verb" in labels and labels["verb"] not in ("WATCH", "CONNECT"):
            out[f"verb:{labels['verb']}"] = out.get(f"verb:{labels['verb']}", 0) + value
            out["total"] = out.get("total", 0) + value
        elif "flow_schema" in labels and "verb" not in labels:
            out[f"flow:{labels['flow_schema']}"] = out.get(f"flow:{labels['flow_schema']}", 0) + value
    return out


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] != before.get(k, 0)}


def wait_all(names: Iterable[str], seen: Callable[[], dict[str, float]], timeout: float) -> bool:
    """Poll until every name has a time in ``seen()``; False on timeout."""
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= seen().keys():
            return True
        time.sleep(0.25)
    return False


def last_of(watches: list[ChildWatch]) -> dict[str, float]:
    """Per owner, when its last watched child appeared (only owners that have all of them)."""
    owners = set.intersection(*(set(w.first_seen) for w in watches)) if watches else set()
    return {o: max(w.first_seen[o] for w in watches) for o in owners}


def count_log_lines(path: Path, needles: tuple[str, ...]) -> dict[str, int]:
    """How many lines of a log contain each needle (errors, tracebacks, retries)."""
    counts = dict.fromkeys(needles, 0)
    try:
        with path.open(errors="replace") as log:
            for line in log:
                for needle in needles:
                    counts[needle] += needle in line
    except OSError:
        pass
    return counts


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return bool(response.status == 200)


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, Python, kopf and the repository commit the figures belong to."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kib = status_kib_meminfo()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "kopf": getattr(kopf, "__version__", "?"), "commit": commit}


def status_kib_meminfo() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


FASTER, SMALLER = "< 1: kubeinfer faster", "< 1: kubeinfer smaller"


def _lat(which: str, stat: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: float(r[f"create_to_{which}_child"][f"{stat}_s"])


def _key(name: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: float(r[name])


def _settled(name: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: float(r["requests_per_s_settled"].get(name, 0.0))


ROWS: list[tuple[str, Callable[[dict[str, Any]], float], str]] = [
    # (label, figure, how the ratio reads; no reading: no ratio)
    ("throughput, jobs/s (first create to the last job's last child)", _key("throughput_jobs_per_s"),
     "> 1: kubeinfer faster"),
    ("create to last child (all children), p50 s", _lat("last", "p50"), FASTER),
    ("create to last child (all children), p99 s", _lat("last", "p99"), FASTER),
    ("create to last child (all children), max s", _lat("last", "max"), FASTER),
    ("create to first child, p50 s", _lat("first", "p50"), FASTER),
    ("create to first child, p99 s", _lat("first", "p99"), FASTER),
    ("controller peak RSS, MiB", _key("peak_rss_mib"), SMALLER),
    ("apiserver requests by the controller per job, until the last child", _key("controller_requests_per_job"),
     "< 1: kubeinfer fewer"),
    ("apiserver requests per job, all clients (kube-controller-manager, scheduler too)", _key("all_requests_per_job"),
     "< 1: kubeinfer fewer"),
    ("apiserver requests/s by the controller, steady state after the last child", _settled("flow:exempt"),
     "< 1: kubeinfer fewer"),
    ("controller RSS before the first create, MiB", _key("idle_rss_mib"), ""),
    ("creates sent per second (achieved)", _key("achieved_create_rate"), ""),
    ("jobs with every child at the end", _key("jobs_with_all_children"), ""),
    ("pods at the end (created by kube-controller-manager, never scheduled)", _key("pods"), ""),
]


def _fmt(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def render_markdown(results: dict[str, Any]) -> str:
    """The scale table: both systems' figures and kubeinfer / JobSet ratios, with what they mean."""
    ours, theirs = results["systems"].get("kubeinfer"), results["systems"].get("jobset")
    m, v = results["machine"], results["versions"]
    lines = [
        "# Operator scale: kubeinfer vs JobSet",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Kubernetes {v['KUBERNETES_VERSION']}, "
        f"etcd {v['ETCD_VERSION']}, JobSet {v.get('JOBSET_VERSION', '?')}, kopf {m['kopf']}, Python {m['python']}, "
        f"kubeinfer {m['commit']}. Load average at the start: {m['load_average_at_start']}."
        + (f" {results['note']}" if results.get("note") else ""),
        f"N = {results['count']} objects per system, created at {results['rate']:g}/s; each wants 2 pods "
        f"(no nodes: created, never scheduled). Run wall time {results.get('wall_seconds', 0) / 60:.1f} min.",
        "",
        "| measure | kubeinfer | JobSet | kubeinfer / JobSet | |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, figure, reading in ROWS:
        a = figure(ours) if ours else math.nan
        b = figure(theirs) if theirs else math.nan
        ratio = _fmt(a / b) if reading and b and not math.isnan(a / b) else ""
        lines.append(f"| {label} | {_fmt(a)} | {_fmt(b)} | {ratio} | {reading if ratio else ''} |")
    for key, system in (("kubeinfer", ours), ("jobset", theirs)):
        if system:
            counts = ", ".join(f"`{k}` {n}" for k, n in system["log"].items())
            lines.append(f"| {key} log lines containing: {counts} | | | | |")
    lines.append("")
    for key, system in (("kubeinfer", ours), ("JobSet", theirs)):
        if system:
            tenths = ", ".join(_fmt(x) for x in system["last_child_p50_s_by_tenth"])
            lines.append(f"{key}: p50 create to last child (s) in each tenth of the creates, in order: {tenths}  ")
    return "\n".join(lines) + "\n"


def write_reports(results: dict[str, Any], out: Path, notes: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "scale.md").write_text(render_markdown(results) + notes)
    print((out / "scale.md").read_text(), flush=True)
