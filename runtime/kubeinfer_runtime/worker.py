"""`kubeinfer-worker`: the container entrypoint of a worker pod.

A StatefulSet restarts a container that exits, even with 0, so completion is checked first: if this
job's `_SUCCESS` (or this very job's `_FAILED`: too many failed items) is already in the output, the
worker reports `complete` and idles without touching the model. Otherwise it waits for the master
(bounded), serves /metrics, and runs torchrun; any local failure exits non-zero with the first
rank's error in /dev/termination-log.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading

from kubeinfer_api.jobconfig import JobConfig, load_job_config
from kubeinfer_api.progress import Progress
from kubeinfer_api.status import OutputStatus
from kubeinfer_runtime import metrics
from kubeinfer_runtime.inputs import load_items
from kubeinfer_runtime.launch import first_error, make_run_dir, preload_env, run_ranks, torchrun_argv
from kubeinfer_runtime.ledger import MANIFEST, Ledger, fingerprint
from kubeinfer_runtime.modelstore import prefetch_for_pod
from kubeinfer_runtime.progress import configmap_sink
from kubeinfer_runtime.rendezvous import RendezvousTimeout, wait_for_master, write_termination_message
from kubeinfer_runtime.startup import mark_container_start
from kubeinfer_runtime.storage import ObjectStore

log = logging.getLogger("kubeinfer.worker")


def completed(job: JobConfig) -> dict[str, object] | None:
    """The outcome summary when it belongs to this job's model, task and inputs.

    `_SUCCESS` counts for any job with the same fingerprint; `_FAILED` only for the job that wrote it,
    so re-creating the job retries the failed items.
    """
    ledger = Ledger(ObjectStore(job.spec.output.uri, endpoint_url=job.spec.output.endpoint_url))
    summary = ledger.success()
    if summary is None:
        summary = ledger.unsuccessful()
        if summary is None or summary.get("uid") != job.uid:
            return None
    if summary.get("fingerprint") != fingerprint(job, load_items(job.spec))["fingerprint"]:
        return None  # another job's outputs: the ranks refuse them with a clear error
    return summary


def report_complete(job: JobConfig, summary: dict[str, object], attempt: int) -> None:
    """Node rank 0 re-reports completion (the operator may have missed it before a restart)."""
    sink = configmap_sink(job.name, job.namespace)
    if sink is None:
        return
    store = ObjectStore(job.spec.output.uri, endpoint_url=job.spec.output.endpoint_url)
    total, objects = int(str(summary.get("total", 0))), int(str(summary.get("objects", 0)))
    output = OutputStatus(uri=store.url(), manifest=store.url(MANIFEST), objects=objects,
                          bytes=int(str(summary.get("bytes", 0))))
    sink.publish(Progress(attempt=attempt, phase="complete", total=total, succeeded=objects,
                          failed=total - objects, plan=job.plan, output=output,
                          message=str(summary.get("error", ""))[-2000:]))


def idle() -> None:
    """Stay up without work until the operator deletes the pod (exiting would only restart us)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def master() -> tuple[str, int, int]:
    addr = os.environ.get("PET_MASTER_ADDR") or os.environ.get("MASTER_ADDR") or "127.0.0.1"
    port = int(os.environ.get("PET_MASTER_PORT") or os.environ.get("MASTER_PORT") or 29500)
    node_rank = int(os.environ.get("PET_NODE_RANK") or os.environ.get("NODE_RANK") or 0)
    return addr, port, node_rank


#: Set when the pod was told to stop (SIGTERM/SIGINT) while its ranks ran: it exits instead of idling.
stop_requested = threading.Event()


def run_worker() -> int:
    mark_container_start()
    job = load_job_config()
    attempt = int(os.environ.get("KUBEINFER_ATTEMPT") or 0)
    addr, port, node_rank = master()
    summary = completed(job)
    if summary is not None:
        log.info("job %s is already complete (%s of %s items); nothing to do", job.name, summary.get("objects"),
                 summary.get("total"))
        if node_rank == 0:
            report_complete(job, summary, attempt)
        return 0
    prefetch_for_pod(job, node_rank)  # overlaps the rendezvous and the ranks' start-up
    if not job.spec.strategy.elastic:
        wait_for_master(addr, port, job.spec.rendezvous.timeout_seconds, check_port=node_rank != 0)
    # The ranks' metric files outlive torchrun: an idle finished pod still reports its counts.
    atexit.register(metrics.cleanup, metrics.prepare_multiprocess_dir())
    metrics.serve(metrics.port_from_env(metrics.DEFAULT_PORT))
    run_dir = make_run_dir()
    argv, env = torchrun_argv(), preload_env(job.spec.task.type) | dict(os.environ)
    if job.spec.strategy.elastic:  # this pod's processes alone: peers come and go, nobody waits for a gang
        argv = torchrun_argv(nproc=job.plan.processes_per_node, standalone=True)
        env = {k: v for k, v in env.items() if not k.startswith("PET_")} | {"KUBEINFER_NODE_RANK": str(node_rank)}
    code = run_ranks(argv, env, run_dir, stop_requested)
    if code != 0:
        message = first_error(run_dir) or f"torchrun exited with {code}; see the worker log"
        log.error("worker failed: %s", message)
        write_termination_message(message)
    return code


def main() -> None:
    logging.basicConfig(level=os.environ.get("KUBEINFER_LOG_LEVEL", "INFO"),
                        format="%(asctime)s worker %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        code = run_worker()
    except RendezvousTimeout as err:
        log.error("%s", err)
        sys.exit(1)
    except Exception as err:  # storage, inputs or job.json: say why in the pod status
        message = f"{type(err).__name__}: {err}"
        log.error("worker failed: %s", message)
        write_termination_message(message)
        sys.exit(1)
    in_pod = os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("KUBEINFER_EXIT_WHEN_DONE") != "1"
    if code == 0 and in_pod and not stop_requested.is_set():  # a SIGTERM that came during the run is not repeated
        idle()
    sys.exit(code)


if __name__ == "__main__":
    main()
