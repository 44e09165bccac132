"""The autoload flow: landing zone -> anonymized archive + catalog, in batches."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import Task, flow, get_run_logger
from prefect.runtime import flow_run

from catalog.compact import sweep_temporary
from flows.artifacts import publish_autoload
from flows.locks import autoload_lock, exclusive
from flows.naming import autoload_name, named_for_batch, rename_run
from flows.runlogs import run_logs
from flows.settings import Settings, SettingsError, load_settings
from receiver.durable import restrict_new_files, sweep_partials
from tasks.autoload import (
    archived_in_order,
    as_is,
    clear_batch,
    list_landed,
    record_batch,
    record_quarantine,
    record_receipts,
)
from tasks.events import emit_archived
from tasks.ingest import IngestContext
from tasks.policy import build_policy
from tasks.profile import ProfileError
from tasks.rules import RulesError
from tasks.runners import RunnerError, batch_runner, check_scheduler, in_flight


@dataclass
class AutoloadSummary:
    """What one autoload run did; no patient data."""

    landed: int = 0
    archived: int = 0
    versions: int = 0
    """Re-sent instances with changed content: archived as a new version."""
    duplicates: int = 0
    recorded: int = 0
    receipts: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0
    batches: int = 0
    skipped: str | None = None

    @property
    def files_per_second(self) -> float:
        return self.landed / self.seconds if self.seconds else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0


@contextmanager
def crash_sweep(settings: Settings) -> Iterator[int]:
    """Mark a run as under way; after a run that died, first sweep the files it left.

    The marker outlives a killed run, so the next run (holding the lock) knows that
    temporary files in archive and catalog are orphans. A clean run never walks them.
    """
    marker = settings.data_dir / "autoload.unfinished"
    removed = 0
    if marker.exists():
        removed = sweep_partials(settings.archive) + sweep_temporary(settings.catalog_store())
    marker.touch()
    yield removed
    marker.unlink()


def preflight(settings: Settings) -> None:
    """Fail at once, in one line, on settings that would make every batch fail."""
    try:
        build_policy(settings.anonymize.options, settings.anonymize.site_rules)
    except (RulesError, ProfileError) as exc:
        raise SettingsError(f"anonymize: {exc}") from None
    settings.salt()
    if settings.autoload.dask_address:
        try:
            check_scheduler(settings.autoload.dask_address)
        except RunnerError as exc:
            raise SettingsError(str(exc)) from None
    for name, folder in settings.folders().items():
        if folder.exists() and not folder.is_dir():
            raise SettingsError(f"{name} folder {folder} exists and is not a folder")


def batches(paths: list[Path], size: int) -> list[list[Path]]:
    """Split `paths` into consecutive batches of at most `size`."""
    return [paths[i : i + size] for i in range(0, len(paths), size)]


def ingest_context(settings: Settings, run_id: str) -> IngestContext:
    return IngestContext(
        archive_dir=settings.archive,
        quarantine_dir=settings.quarantine,
        catalog_dir=settings.catalog_location,
        catalog_options=dict(settings.catalog.storage_options),
        catalog_lock=settings.catalog_lock,
        record_unit=settings.catalog.record_unit,
        logs_dir=settings.logs_dir,
        salt=settings.salt(),
        options=tuple(settings.anonymize.options),
        site_rules=settings.anonymize.site_rules,
        burned_in=settings.anonymize.burned_in,
        mapping_dir=settings.mapping_dir if settings.anonymize.mapping_table else None,
        run_id=run_id,
    )


def run_name() -> str:
    """The name a run starts with; `_run_batches` adds the file count once it is known."""
    return autoload_name(datetime.now(UTC))


@flow(name="autoload", flow_run_name=run_name, log_prints=False)
def autoload(config_file: str | None = None, wait_for_lock_seconds: float = 0.0) -> AutoloadSummary:
    """Process every completed landed file: anonymize, archive, catalog, then clear landing.

    Only one autoload works on a data root at a time.

    Args:
        config_file: The TOML settings file (else DICOMFLOW_CONFIG and the environment).
        wait_for_lock_seconds: How long to wait for another autoload at work before
            skipping this run.
    """
    with run_logs(flow_run.id):
        settings = load_settings(config_file)
        restrict_new_files()
        preflight(settings)
        return run_autoload(settings, wait_for_lock_seconds)


def run_autoload(settings: Settings, wait_for_lock_seconds: float = 0.0) -> AutoloadSummary:
    """The body of `autoload`, for callers that already hold settings."""
    logger = get_run_logger()
    summary = AutoloadSummary()
    started = time.perf_counter()
    with exclusive(autoload_lock(settings.data_dir), wait_for_lock_seconds) as owner:
        if not owner:
            summary.skipped = "another autoload run holds the lock"
            logger.info("skipped: %s", summary.skipped)
            rename_run(lambda started: autoload_name(started, skipped=True))
            return summary
        ctx = ingest_context(settings, str(flow_run.id or "local"))
        with crash_sweep(settings) as swept:
            if swept:
                logger.info("removed %d temporary files a crashed run left", swept)
            _run_batches(settings, ctx, summary)
    summary.seconds = round(time.perf_counter() - started, 3)
    logger.info(
        "landed %d, archived %d new, %d new versions, duplicates %d, quarantined %d in %.1f s",
        summary.landed,
        summary.archived,
        summary.versions,
        summary.duplicates,
        sum(summary.quarantined.values()),
        summary.seconds,
    )
    publish_autoload(summary)
    return summary


def _run_batches(settings: Settings, ctx: IngestContext, summary: AutoloadSummary) -> None:
    """Archive batches on the task runner; record, then clear landing, batch after batch
    in order, adding up into `summary`. Only this process writes the catalog."""
    landed = list_landed(settings.landing)
    summary.landed = len(landed)
    rename_run(lambda started: autoload_name(started, len(landed)))
    # Receipts first: the batches look up their files' calling AE titles there.
    summary.receipts = record_receipts(as_is(ctx))
    quarantined: Counter[str] = Counter()
    work = settings.autoload
    window = in_flight(work.workers, work.dask_address)
    parts = batches(landed, work.batch_size)
    total = len(parts)

    def named(step: Task[..., Any], batch_no: int, files: int) -> Task[..., Any]:
        return named_for_batch(step, batch_no, total, files)

    with batch_runner(work.workers, work.dask_address) as runner:
        for batch_no, outcome in archived_in_order(runner, parts, ctx, window, named):
            done = len(outcome.archived)
            record = named_for_batch(record_batch, batch_no, total, done)
            summary.recorded += record(as_is(outcome), as_is(ctx), batch_no)
            named_for_batch(clear_batch, batch_no, total, done)(as_is(outcome), batch_no)
            emit_archived(outcome, ctx.run_id, batch_no)
            summary.archived += outcome.new
            summary.versions += outcome.versions
            summary.duplicates += outcome.duplicates
            summary.bytes += outcome.bytes
            quarantined.update(outcome.quarantined)
            summary.batches = batch_no
    summary.quarantined = dict(quarantined)
    record_quarantine(as_is(ctx))  # also after a retry moved files out
