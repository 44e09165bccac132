"""Prefect tasks around `tasks.ingest`: one task run per step per batch, never per file.

Each task takes and returns paths, UIDs and counts. Only storage failures are
retried: a file that is not usable DICOM was already quarantined by the step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import TaskRunner
from prefect.utilities.annotations import quote

from catalog.compact import CompactionResult, compact
from catalog.store import open_store
from receiver.landing import LandingZone
from tasks import ingest, operations

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def as_is(value: T) -> T:
    """`value` as a task argument Prefect hands over without walking through it.

    Prefect visits every element of a task's arguments, looking for futures and
    states to track; a batch's outcome holds hundreds of catalog rows with whole
    DICOM JSON headers, and the context the anonymization policy: walking them cost
    about as much as archiving. (The task gets `value` itself, unwrapped.) Only for
    tasks called in this process: a task runner that ships arguments elsewhere (Dask)
    gets the wrapper, not the value.
    """
    return cast(T, quote(value))


def storage_failure(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry only when the disk or filesystem failed, never for a bad file."""
    return isinstance(state.data, OSError)


def batch_step(name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A batch step: named per batch in the UI, retried only for storage failures.

    No caching: each step is idempotent on the files themselves, and a cached
    result would skip work a crashed run left undone.
    """
    return task(
        name=name,
        task_run_name=f"{name} batch {{batch_no}}",
        retries=2,
        retry_delay_seconds=[5, 30],
        retry_condition_fn=storage_failure,
        cache_policy=NO_CACHE,
    )


def run_step(name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A step that runs once per run, retried only for storage failures, never cached."""
    return task(
        name=name,
        retries=2,
        retry_delay_seconds=[5, 30],
        retry_condition_fn=storage_failure,
        cache_policy=NO_CACHE,
    )


@task(name="list landed", cache_policy=NO_CACHE)
def list_landed(landing_dir: Path) -> list[Path]:
    """Completed files in the landing zone, oldest first."""
    return LandingZone(landing_dir).completed()


@batch_step("archive")
def archive_batch(
    paths: list[Path], ctx: ingest.IngestContext, batch_no: int
) -> ingest.ArchiveOutcome:
    """Parse, anonymize and archive one batch; quarantine what cannot be used."""
    return ingest.archive_files(paths, ctx)


def archived_in_order(
    runner: TaskRunner[Any],
    batches: list[list[Path]],
    ctx: ingest.IngestContext,
    window: int,
    named: Callable[[Task[..., Any], int, int], Task[..., Any]] | None = None,
) -> Iterator[tuple[int, ingest.ArchiveOutcome]]:
    """(batch number, outcome) of `archive_batch` for each batch, in order, with up to
    `window` batches submitted to `runner` ahead of the one the caller is recording.
    `named(task, batch number, files)` gives each batch's task its run name.

    A failed batch raises here, at its turn: the batches before it are recorded and
    cleared, it and those after keep their landed files for the retry or next run.
    """
    numbered = iter(enumerate(batches, 1))

    def submit(item: tuple[int, list[Path]]) -> tuple[int, PrefectFuture[ingest.ArchiveOutcome]]:
        batch_no, paths = item
        params = {"paths": paths, "ctx": ctx, "batch_no": batch_no}
        task = named(archive_batch, batch_no, len(paths)) if named else archive_batch
        return batch_no, runner.submit(task, params)

    pending = deque(submit(item) for item in islice(numbered, window))
    while pending:
        batch_no, future = pending.popleft()
        outcome = future.result()
        if (item := next(numbered, None)) is not None:
            pending.append(submit(item))
        yield batch_no, outcome


@batch_step("record")
def record_batch(outcome: ingest.ArchiveOutcome, ctx: ingest.IngestContext, batch_no: int) -> int:
    """Append catalog rows for this batch's instance versions the catalog does not hold yet."""
    return ingest.record_instances(outcome.archived, ctx.store(), ctx.record_unit)


@batch_step("clear landing")
def clear_batch(outcome: ingest.ArchiveOutcome, batch_no: int) -> int:
    """Delete the batch's landed files, now durable in archive and catalog."""
    return ingest.clear_landing(outcome.archived)


@run_step("record receipts")
def record_receipts(ctx: ingest.IngestContext) -> int:
    """Bring the receiver's receipts written since the last run into the receipts table."""
    return operations.ingest_receipts(ctx)


@run_step("record quarantine")
def record_quarantine(ctx: ingest.IngestContext) -> int:
    """Make the quarantine table match the quarantine folder."""
    return operations.mirror_quarantine(ctx)


@run_step("compact catalog")
def compact_catalog(
    location: str,
    storage_options: dict[str, Any],
    lock_path: Path | None,
    keep_replaced_seconds: float,
) -> CompactionResult:
    """Merge the catalog's small parts; drop those replaced longer ago than the grace period."""
    try:
        return compact(open_store(location, storage_options, lock_path), keep_replaced_seconds)
    except OSError as exc:
        raise ingest.StorageUnavailable.during("compaction", exc) from exc
