"""One torchrun process: the path of a job through one rank (`python -m kubeinfer_runtime.rank`).

join the group → rank 0 reads the items, claims the output prefix and reads the commit records, and
every rank receives the same pending list (one broadcast, before any compute) → fetch the model →
resolve `auto` → load the strategy → compute, with commits in background threads → mark this rank
done → rank 0 waits for every rank's marker and writes manifest.jsonl, the contact sheet and _SUCCESS.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubeinfer_api.jobconfig import JobConfig, load_job_config
from kubeinfer_api.plan import build_plan
from kubeinfer_api.status import OutputStatus
from kubeinfer_api.validation import output_format
from kubeinfer_runtime import drain, elastic, startup
from kubeinfer_runtime.claims import Claims
from kubeinfer_runtime.contactsheet import MAX_TILES, contact_sheet
from kubeinfer_runtime.contactsheet import NAME as CONTACT_SHEET
from kubeinfer_runtime.distributed import init_distributed, local_context, shutdown_distributed
from kubeinfer_runtime.inputs import load_items
from kubeinfer_runtime.launch import RUN_DIR_ENV
from kubeinfer_runtime.ledger import MANIFEST, Ledger, fingerprint
from kubeinfer_runtime.manifest import Tally
from kubeinfer_runtime.modelstore import check_model, fetch_model
from kubeinfer_runtime.outputs import Committer, record_limits
from kubeinfer_runtime.progress import Reporter, configmap_sink
from kubeinfer_runtime.startup import Collector, StartupClock, set_clock
from kubeinfer_runtime.storage import ObjectStore
from kubeinfer_runtime.strategies import Item, RunContext, echo_for_tests, strategy_for
from kubeinfer_runtime.strategies.auto import resolve_strategy
from kubeinfer_runtime.strategies.base import DistContext, Result, Strategy
from kubeinfer_runtime.windows import IndexView, plan_windows, window_view

log = logging.getLogger("kubeinfer")
#: TEST ONLY: each item takes at least this many seconds (e2e fault tests need a job that is slow, not busy).
ITEM_DELAY_ENV = "KUBEINFER_TEST_ONLY_ITEM_DELAY_SECONDS"
#: TEST ONLY: "<rank>:<n>": that rank stops after handing its n-th result to the committer and waits to be
#: killed (fault tests kill a rank at a known point, however fast or loaded the machine is).
HOLD_ENV = "KUBEINFER_TEST_ONLY_HOLD_RANK_AFTER"


class ItemsFailed(RuntimeError):
    """Fewer items succeeded than spec.successPolicy.minSucceededRatio demands."""


@dataclass(frozen=True)
class Work:
    """What every rank must agree on before computing (sent by rank 0)."""

    pending: IndexView  # the open windows' items, made as they are reached
    total: int
    run_id: str
    fingerprint: str
    skip: frozenset[str] = frozenset()  # committed before, recomputed only to keep their batch whole
    window: int = 1  # items [k*window, (k+1)*window) are one batch

    @property
    def to_do(self) -> int:
        return len(self.pending) - len(self.skip)


@dataclass(frozen=True)
class Announcement:
    """Work, compactly, as rank 0 broadcasts it: the open batch windows as ranges, not the items."""

    total: int
    run_id: str
    fingerprint: str
    skip: frozenset[str]
    window: int
    open_windows: list[tuple[int, int]]  # [first, last + 1) ranges of window numbers

    @classmethod
    def of(cls, work: Work) -> Announcement:
        return cls(work.total, work.run_id, work.fingerprint, work.skip, work.window, work.pending.windows(work.window))

    def work(self, items: Sequence[Item]) -> Work:
        """The same Work on this rank, from its own copy of the items."""
        return Work(pending=window_view(items, self.open_windows, self.window), total=self.total, run_id=self.run_id,
                    fingerprint=self.fingerprint, skip=self.skip, window=self.window)


@dataclass
class Job:
    config: JobConfig
    dist: DistContext
    store: ObjectStore
    ledger: Ledger
    attempt: int
    reporter: Reporter


def batch_window(config: JobConfig) -> int:
    """Items [k*w, (k+1)*w) share a batch, whoever computes them and whatever was done before."""
    return config.spec.strategy.batch_size


def plan_work(config: JobConfig, ledger: Ledger, items: Sequence[Item] | None = None) -> Work:
    """Rank 0: the items, the claim on the output prefix, and the batches still to do.

    A batch with any uncommitted item is computed whole (its committed items are not written again),
    so an item's batch-mates, and so its output, never depend on what an earlier attempt finished.
    """
    items = load_items(config.spec) if items is None else items
    detail = fingerprint(config, items)
    ledger.claim(config, detail)
    window = batch_window(config)
    windows, skip = plan_windows(ledger.state().entries.values(), len(items), window)  # O(committed)
    run_id = uuid.uuid4().hex[:12]
    ledger.mark_planned(run_id)
    return Work(pending=window_view(items, windows, window), total=len(items), run_id=run_id,
                fingerprint=detail["fingerprint"], skip=skip, window=window)


def share_work(job: Job) -> Work:
    """Rank 0 plans and broadcasts the open windows (not the items: every rank reads its own copy, so the
    broadcast stays small at a million items); a planning error reaches every rank, so none waits forever."""
    import torch.distributed as dist

    work: Work | None = None
    planned: Announcement | str = ""
    if job.dist.rank == 0:
        try:
            work = plan_work(job.config, job.ledger)
            planned = Announcement.of(work)
        except Exception as err:
            planned = f"{type(err).__name__}: {err}"
    if job.dist.world_size > 1:
        box = [planned if job.dist.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        planned = box[0]  # type: ignore[assignment]
    if isinstance(planned, str):
        raise RuntimeError(planned if job.dist.rank == 0 else f"rank 0 failed to plan the work: {planned}")
    if work is None:
        work = planned.work(load_items(job.config.spec))
    check_shared_output(job, work)
    return work


def check_shared_output(job: Job, work: Work) -> None:
    """Every rank must see rank 0's writes, or rank 0 would wait forever for done markers it cannot see."""
    if job.dist.world_size == 1:
        return
    import torch
    import torch.distributed as dist

    seen = job.dist.rank == 0 or job.ledger.planned(work.run_id)
    flag = torch.tensor([int(seen)], device=job.dist.device if job.dist.backend == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    if not flag.item():
        raise ValueError(f"spec.output.uri: {job.store.url()} is not shared by the workers: some ranks cannot see "
                         "what rank 0 wrote there. Use object storage (s3://, gs://, az://) or a ReadWriteMany "
                         "volume mounted at the same path in every pod")


def load_strategy(job: Job) -> Strategy:
    """Fetch and check the model, resolve `auto`, load the strategy (or the test-only echo stand-in)."""
    spec, dist = job.config.spec, job.dist
    if echo_for_tests.enabled():
        strategy: Strategy = echo_for_tests.EchoForTests(
            RunContext(job=job.config, dist=dist, model_dir=Path(), strategy=echo_for_tests.EchoForTests.name))
        strategy.load()
        return strategy
    model_dir = fetch_model(spec.model)
    startup.mark("fetch")
    check_model(model_dir, spec.model, spec.task.type)
    name, explanation = resolve_strategy(job.config, model_dir, dist.device)
    if dist.rank == 0:
        log.info("plan: %s (%s)", name, explanation)
    job.reporter.set(plan=build_plan(spec, name, explanation))
    strategy = strategy_for(name)(RunContext(job=job.config, dist=dist, model_dir=model_dir, strategy=name))
    strategy.load()
    startup.mark("load")
    return strategy


def compute(job: Job, work: Work) -> None:
    spec, dist = job.config.spec, job.dist
    strategy = load_strategy(job)
    job.reporter.set(phase="running")
    began = time.perf_counter()
    committer = Committer(job.store, job.ledger, output_format(spec), dist.rank, job.attempt, run_id=work.run_id,
                          skip=work.skip, **record_limits())
    delay = float(os.environ.get(ITEM_DELAY_ENV) or 0)
    hold = held_after(dist.rank)
    try:
        for count, result in enumerate(strategy.run(work.pending)):
            if count == 0:
                startup.mark("firstItem")
            if delay:
                time.sleep(delay)
            committer.submit(result)
            if count + 1 == hold:
                threading.Event().wait()
            if drain.requested():
                break
    finally:
        stats = committer.close()
    log.info("rank %d: %d items committed, %d failed in %.2f s", dist.rank, stats.succeeded, stats.failed,
             time.perf_counter() - began)
    if drain.requested():
        raise drain.stopped(stats.succeeded)


def held_after(rank: int) -> int:
    """The test-only HOLD_ENV count for `rank` (0: never held)."""
    held_rank, _, count = (os.environ.get(HOLD_ENV) or "").partition(":")
    return int(count) if count and int(held_rank) == rank else 0


def wait_for_ranks(job: Job, work: Work, poll_s: float = 0.2) -> None:
    """Rank 0: every rank's done marker (no collective, so slow ranks never hit a timeout)."""
    last_log = time.monotonic()
    while (done := job.ledger.done_ranks(work.run_id)) < job.dist.world_size:
        if time.monotonic() - last_log > 30:
            log.info("finalize: %d of %d ranks done; waiting", done, job.dist.world_size)
            last_log = time.monotonic()
        time.sleep(poll_s)


def finalize(job: Job, work: Work, wait: bool = True) -> None:
    """Rank 0: decide with successPolicy, then manifest, contact sheet and finally _SUCCESS (or _FAILED)."""
    job.reporter.set(phase="finalizing")
    if wait:
        wait_for_ranks(job, work)
    tally = job.ledger.write_manifest(work.total)
    if tally.missing:  # no outcome marker: a restart computes them
        first = next((i.id for i in work.pending if i.index == tally.first_missing), f"index {tally.first_missing}")
        raise RuntimeError(f"{tally.missing} items got no result from any rank (first: {first}); this is a bug")
    output = OutputStatus(uri=job.store.url(), manifest=job.store.url(MANIFEST), objects=tally.succeeded,
                          bytes=tally.bytes)
    job.reporter.set(output=output)
    spec = job.config.spec
    summary = {"fingerprint": work.fingerprint, "job": job.config.name, "uid": job.config.uid, "total": work.total,
               "succeeded": tally.succeeded, "failed": tally.failed_ids, "attempt": job.attempt,
               "objects": output.objects, "bytes": output.bytes}
    counts = (tally.succeeded, tally.failed)
    needed = spec.success_policy.min_succeeded_ratio
    if work.total and tally.succeeded / work.total < needed:
        message = failure_message(tally, needed)
        # The job has an outcome: the workers idle and the operator fails it (TooManyFailedItems).
        job.ledger.write_unsuccessful({**summary, "error": message})
        job.reporter.close("complete", message=message, output=output, counts=counts)
        raise ItemsFailed(message)
    if spec.task.type == "text-to-image" and spec.output.contact_sheet and tally.succeeded:
        job.store.put(CONTACT_SHEET, contact_sheet(job.store, job.ledger.manifest_head(MAX_TILES), tally.succeeded))
    job.ledger.write_success(summary)
    job.reporter.close("complete", output=output, counts=counts)
    log.info("complete: %d of %d items in %s", tally.succeeded, work.total, job.store.url())


def failure_message(tally: Tally, needed: float) -> str:
    first = tally.first_failure
    return (f"{tally.failed} of {tally.total} items failed, {tally.succeeded} succeeded; "
            f"successPolicy.minSucceededRatio is {needed}. First failure: item {first.get('id')}: {first.get('error')}")


def run(config: JobConfig, attempt: int) -> None:
    dist = init_distributed(config.spec.rendezvous.backend, config.spec.rendezvous.timeout_seconds)
    if dist.world_size != config.plan.world_size:
        raise ValueError(f"workers: torchrun started {dist.world_size} processes but the plan needs "
                         f"{config.plan.world_size} (workers.nodes x processes per node)")
    store = ObjectStore(config.spec.output.uri, endpoint_url=config.spec.output.endpoint_url)
    ledger = Ledger(store)
    sink = configmap_sink(config.name, config.namespace) if dist.rank == 0 else None
    reporter = Reporter(attempt, sink, log_lines=dist.local_rank == 0)
    job = Job(config, dist, store, ledger, attempt, reporter)
    clock = set_clock(StartupClock(dist.rank, attempt, store))
    collector = Collector(store, attempt, dist.world_size, reporter) if dist.rank == 0 else None
    if dist.local_rank == 0:
        reporter.start()
    try:
        work = share_work(job)
        startup.mark("rendezvous")
        if collector is not None and work.pending:
            collector.start()
        reporter.track(lambda: ledger.counts(work.run_id, dist.world_size))
        reporter.set(phase="loading", total=work.total, skipped=work.total - work.to_do)
        if dist.rank == 0:
            log.info("work: %d items, %d already committed, %d to do", work.total, work.total - work.to_do,
                     work.to_do)
        if work.pending:
            compute(job, work)
            clock.finish()
        ledger.mark_done(work.run_id, dist.rank)
        if collector is not None and work.pending:
            collector.stop()
        if dist.rank == 0:
            finalize(job, work)
    except ItemsFailed:
        raise  # already reported as the job's outcome
    except BaseException as err:
        reporter.close("failed", message=f"{type(err).__name__}: {err}")
        raise
    finally:
        shutdown_distributed()


def run_elastic(config: JobConfig, attempt: int) -> None:
    """`data` with strategy.elastic: no process group; this process claims chunks (kubeinfer_runtime.elastic)."""
    dist = local_context()
    store = ObjectStore(config.spec.output.uri, endpoint_url=config.spec.output.endpoint_url)
    ledger, epoch, slot = Ledger(store), elastic.epoch_of(config), elastic.worker_slot()
    sink = configmap_sink(config.name, config.namespace) if dist.local_rank == 0 else None
    reporter = Reporter(attempt, sink, log_lines=dist.local_rank == 0)
    job = Job(config, dist, store, ledger, attempt, reporter)
    set_clock(StartupClock(slot, attempt, store))
    if dist.local_rank == 0:
        reporter.start()
    claims = Claims(store, epoch, slot).start()
    try:
        items = load_items(config.spec)
        detail = fingerprint(config, items)
        ledger.claim(config, detail)
        plan = elastic.plan_chunks(config, ledger, items, epoch)
        startup.mark("rendezvous")
        reporter.track(lambda: ledger.counts_of_all(f"elastic-{epoch}"))
        reporter.set(phase="loading", total=len(items), skipped=len(items) - plan.to_do)
        log.info("work: %d items, %d already committed, %d to do (slot %d, chunks of %d)", len(items),
                 len(items) - plan.to_do, plan.to_do, slot, plan.size)
        if plan.open:
            strategy = load_strategy(job)
            reporter.set(phase="running")
            elastic.ElasticWorker(config, store, ledger, claims, plan, delayed(strategy.run), attempt).run()
        work = Work(pending=plan.view(), total=len(items), run_id=f"elastic-{epoch}", fingerprint=detail["fingerprint"],
                    skip=plan.skip, window=config.spec.strategy.batch_size)
        finalize_once(job, claims, work)
    except ItemsFailed:
        raise
    except BaseException as err:
        reporter.close("failed", message=f"{type(err).__name__}: {err}")
        raise
    finally:
        claims.close()


def delayed(run: Callable[[list[Item]], Iterable[Result]]) -> Callable[[list[Item]], Iterator[Result]]:
    """`run`, each result held back by the test-only ITEM_DELAY_ENV (none by default)."""
    delay = float(os.environ.get(ITEM_DELAY_ENV) or 0)

    def slowed(items: list[Item]) -> Iterator[Result]:
        for result in run(items):
            if delay:
                time.sleep(delay)
            yield result

    return slowed


def finalize_once(job: Job, claims: Claims, work: Work) -> None:
    """Whoever wins the finalize claim writes the manifest; the others wait for its outcome and report it."""
    while True:
        summary = job.ledger.success() or job.ledger.unsuccessful()
        if summary is not None and summary.get("fingerprint") == work.fingerprint:
            output = OutputStatus(uri=job.store.url(), manifest=job.store.url(MANIFEST),
                                  objects=int(summary.get("objects", 0)), bytes=int(summary.get("bytes", 0)))
            succeeded = int(summary.get("succeeded", 0))
            job.reporter.close("complete", message=str(summary.get("error", "")), output=output,
                               counts=(succeeded, work.total - succeeded))
            return
        if claims.take_over("finalize") is not None:
            finalize(job, work, wait=False)
            return
        time.sleep(elastic.POLL_S)


def record_error(err: BaseException) -> None:
    """Leave the message where the launcher finds it (for /dev/termination-log and the CLI)."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        return
    folder = Path(run_dir, "errors")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{os.environ.get('RANK', '0')}.txt").write_text(f"{type(err).__name__}: {err}")


def configure_logging() -> None:
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=os.environ.get("KUBEINFER_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s rank{rank} %(levelname)s %(message)s", datefmt="%H:%M:%S")


def main() -> None:
    configure_logging()
    try:
        config = load_job_config()
        if config.plan.strategy == "data":
            drain.install()
        (run_elastic if config.spec.strategy.elastic else run)(config, int(os.environ.get("KUBEINFER_ATTEMPT") or 0))
        echo_for_tests.write_stats(int(os.environ.get("RANK", "0")))
    except BaseException as err:
        if not isinstance(err, KeyboardInterrupt):
            record_error(err)
        raise


if __name__ == "__main__":
    main()
