"""The retrieve flow: pull a list of studies from a PACS into the archive, completely.

For each row of the job: C-FIND the study, skip it if the archive holds it all,
C-MOVE it to our receiver. Then autoload, count per series what arrived, and ask
again for what is missing (whole series, then single images), a bounded number of
rounds. At most `max_associations` of the node's associations are open at once;
the time window and the node's circuit breaker are honoured before every move.
The outcome per study goes to ``<data_dir>/retrieve/jobs/<job>/outcome.parquet``
and, without patient data, to a table artifact.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from pydantic import Field

from flows.autoload import autoload, preflight
from flows.naming import artifact_key, rename_run, retrieve_name, stamp
from flows.runlogs import run_logs
from flows.settings import Settings, load_settings
from receiver.durable import restrict_new_files
from receiver.scu import ScuError, peer_for
from tasks import retrieve as steps
from tasks.breaker import CircuitBreaker
from tasks.events import emit_retrieved
from tasks.pseudonyms import Pseudonymizer
from tasks.pull import PullContext
from tasks.retrieval import (
    JOB_ID_PATTERN,
    JobError,
    StudyOutcome,
    StudyRequest,
    check_job_id,
    job_id_for,
    load_job,
    summary_counts,
    write_outcomes,
    write_progress,
)


class RetrieveError(Exception):
    """A retrieval that cannot start (unknown node, unreadable job); one line."""


@dataclass
class RetrieveSummary:
    """What one retrieve run did; no patient data."""

    job_id: str
    node: str
    rows: int = 0
    studies: int = 0
    states: dict[str, int] = field(default_factory=dict)
    moved: int = 0
    archived: int = 0
    outcome_file: str = ""
    seconds: float = 0.0
    reasons: list[tuple[str, str, int]] = field(default_factory=list)
    """(state, message, studies) of what did not end complete or skipped."""


def pull_context(
    settings: Settings, node: str, job_id: str, destination: str | None
) -> PullContext:
    """Everything a pull needs, from the settings; raises `RetrieveError` for a bad node."""
    try:
        peer = peer_for(node, settings.nodes, settings.receiver.ae_title, settings.scu)
    except ScuError as exc:
        raise RetrieveError(str(exc)) from None
    from tasks.policy import build_policy

    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in node)
    return PullContext(
        peer=peer,
        job_id=job_id,
        destination=destination or settings.receiver.ae_title,
        ledger=settings.move_ledger(),
        breaker=CircuitBreaker(
            settings.retrieve_dir / "breakers" / f"{safe_name}.json",
            settings.retrieve.breaker_failures,
            settings.retrieve.breaker_cooldown_seconds,
        ),
        catalog=settings.catalog_store(),
        policy=build_policy(settings.anonymize.options, settings.anonymize.site_rules),
        keys=Pseudonymizer(settings.salt()),
        window=settings.retrieve.window,
        wait_for_window=settings.retrieve.outside_window == "wait",
    )


def read_requests(job_file: str | None, sql: str | None) -> list[StudyRequest]:
    try:
        return load_job(Path(job_file) if job_file else None, sql)
    except JobError as exc:
        raise RetrieveError(str(exc)) from None


def run_name() -> str:
    """The name a run starts with; `run_retrieve` names the job once it has read it."""
    from prefect.runtime import flow_run

    return f"retrieve {flow_run.parameters.get('node', '')} {stamp(datetime.now(UTC))}"


@flow(name="retrieve", flow_run_name=run_name, log_prints=False)
def retrieve(
    node: str,
    job_file: str | None = None,
    sql: str | None = None,
    job_id: Annotated[str | None, Field(pattern=JOB_ID_PATTERN)] = None,
    destination: str | None = None,
    config_file: str | None = None,
) -> RetrieveSummary:
    """Pull the studies a job lists from `node` into the archive, and check they are complete.

    The job's columns are named by DICOM keyword: StudyInstanceUID, or
    AccessionNumber, or PatientID (and optionally StudyDate, a DICOM date range).
    The same job run again (same rows, same node, or the same `job_id`) does only
    what is left.

    Args:
        node: The PACS node to pull from, a [nodes.NAME] of the settings.
        job_file: A CSV or Parquet file listing the studies, one per row.
        sql: A DuckDB query giving the job's rows, instead of a job_file. Its text is
            kept with the run: let it read identifiers from a file, not quote them.
        job_id: A name for the job (default: derived from the node and the rows): 1 to 64
            letters, digits, '.', '_' or '-', starting with a letter or digit.
        destination: The AE title the node sends to (default: our receiver's).
        config_file: The TOML settings file (else DICOMFLOW_CONFIG and the environment).
    """
    from prefect.runtime import flow_run

    with run_logs(flow_run.id):
        settings = load_settings(config_file)
        restrict_new_files()
        preflight(settings)
        requests = read_requests(job_file, sql)
        return run_retrieve(settings, node, requests, job_id, destination, config_file)


def _gave_up(ctx: PullContext, request: StudyRequest, exc: BaseException) -> StudyOutcome:
    return StudyOutcome(ctx.job_id, request.row, "failed", message=f"gave up: {exc}")


def _autoload(settings: Settings, config_file: str | None) -> None:
    """Archive what arrived, waiting for an autoload another process may be running."""
    autoload(config_file, wait_for_lock_seconds=settings.retrieve.autoload_wait_seconds)


def run_retrieve(
    settings: Settings,
    node: str,
    requests: list[StudyRequest],
    job_id: str | None = None,
    destination: str | None = None,
    config_file: str | None = None,
) -> RetrieveSummary:
    """The body of `retrieve`, for callers that hold settings and requests already."""
    logger = get_run_logger()
    started = time.perf_counter()
    try:
        job_id = check_job_id(job_id) if job_id is not None else job_id_for(node, requests)
    except JobError as exc:
        raise RetrieveError(str(exc)) from None
    ctx = pull_context(settings, node, job_id, destination)
    summary = RetrieveSummary(job_id=job_id, node=node, rows=len(requests))
    rename_run(lambda started: retrieve_name(job_id, started, len(requests), "row"))
    progress: dict[str, Any] = {"job_id": job_id, "rows": len(requests), "done": 0}
    write_progress(settings.retrieve_dir, job_id, progress)
    logger.info("job %s: %d rows from %s", job_id, len(requests), ctx.peer.describe())
    _autoload(settings, config_file)  # what an interrupted run received counts as archived

    pull = steps.pull_request.with_options(
        retries=settings.retrieve.retries,
        retry_delay_seconds=exponential_backoff(settings.retrieve.retry_delay_seconds)
        if settings.retrieve.retry_delay_seconds
        else 0,
    )
    rerequest = steps.rerequest.with_options(retries=settings.retrieve.retries)
    outcomes: list[StudyOutcome] = []
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(ctx.peer.node.max_associations)
    with runner:
        futures: dict[PrefectFuture[Any], StudyRequest] = {
            runner.submit(pull, {"ctx": ctx, "request": r}): r for r in requests
        }
        for future in as_completed(list(futures)):
            try:
                outcomes.extend(future.result())
            except Exception as exc:
                outcomes.append(_gave_up(ctx, futures[future], exc))
            progress["done"] += 1
            progress["moved"] = sum(o.moved for o in outcomes)
            write_progress(settings.retrieve_dir, job_id, progress)

        outcomes.sort(key=lambda o: (o.row, o.study_uid or ""))
        studies = sum(1 for o in outcomes if o.study_uid)
        rename_run(lambda started: retrieve_name(job_id, started, studies))
        rounds = settings.retrieve.max_rerequests
        for round_no in range(1, rounds + 2):
            if not any(o.state == "pending" for o in outcomes):
                break
            _autoload(settings, config_file)
            outcomes = steps.check_all(ctx, outcomes, round_no)
            short = [i for i, o in enumerate(outcomes) if o.state == "pending"]
            if not short or round_no > rounds:
                break
            logger.info("round %d: re-requesting what %d studies lack", round_no, len(short))
            again: dict[PrefectFuture[Any], int] = {
                runner.submit(
                    rerequest, {"ctx": ctx, "outcome": outcomes[i], "round_no": round_no}
                ): i
                for i in short
            }
            for future in as_completed(list(again)):
                index = again[future]
                try:
                    outcomes[index] = future.result()
                except Exception as exc:
                    outcomes[index] = outcomes[index].with_(message=f"re-request failed: {exc}")
    outcomes = [o.with_(state="incomplete") if o.state == "pending" else o for o in outcomes]
    summary.studies = sum(1 for o in outcomes if o.study_uid)
    summary.states = summary_counts(outcomes)
    summary.reasons = reasons(outcomes)
    summary.moved = sum(o.moved for o in outcomes)
    summary.archived = sum(o.archived for o in outcomes)
    summary.outcome_file = str(write_outcomes(settings.retrieve_dir, job_id, outcomes))
    summary.seconds = round(time.perf_counter() - started, 3)
    progress.update(finished=True, states=summary.states, moved=summary.moved)
    write_progress(settings.retrieve_dir, job_id, progress)
    logger.info(
        "job %s: %s; %d instances moved, %d archived in %.1f s",
        job_id,
        counted_states(summary.states),
        summary.moved,
        summary.archived,
        summary.seconds,
    )
    emit_retrieved(outcomes, node)
    create_table_artifact(
        key=artifact_key("retrieve", job_id),
        table=[o.public() for o in outcomes],
        description=f"Studies of retrieval {job_id} from {node}: archive UIDs and counts only.",
    )
    return summary


def reasons(outcomes: list[StudyOutcome]) -> list[tuple[str, str, int]]:
    """Why studies did not end complete or skipped: (state, message, how many), most first."""
    counts: dict[tuple[str, str], int] = {}
    for o in outcomes:
        if o.state not in ("complete", "skipped"):
            key = (o.state, o.message or "no reason recorded")
            counts[key] = counts.get(key, 0) + 1
    return sorted(((s, m, n) for (s, m), n in counts.items()), key=lambda r: (-r[2], r[0], r[1]))


def counted_states(states: dict[str, int]) -> str:
    """``2 complete, 1 deferred``: the states of a job's studies, as a person reads them."""
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"


def summary_lines(summary: RetrieveSummary) -> list[str]:
    """The summary as `key: value` lines for the command line (reasons: `reasons`)."""
    shown = asdict(summary)
    shown.pop("reasons")
    shown["states"] = counted_states(summary.states)
    return [f"{k:>12}: {v}" for k, v in shown.items() if v not in (None, {}, "")]
