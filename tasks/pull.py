"""Pulling studies from a PACS: find them, see what the archive lacks, move, re-request.

Plain functions over `receiver.query` and `receiver.move`; `tasks.retrieve` wraps
them in Prefect tasks. Each is safe to repeat: a study the archive already holds
in full is not asked for again, and a repeated instance is archived once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import catalog
from catalog.store import CatalogStore
from receiver.move import MoveResult, move, move_identifier
from receiver.move_ledger import MoveLedger
from receiver.query import QueryError, build_identifier, find
from receiver.scu import AssociationRejected, Peer, ScuError
from tasks.anonymize import archived_uids
from tasks.breaker import CircuitBreaker
from tasks.policy import Policy
from tasks.pseudonyms import Pseudonymizer
from tasks.retrieval import StudyOutcome, StudyRequest, in_window, seconds_until_open, shortfall

LOGGER = logging.getLogger("dicomflow.retrieve")

IMAGE_MOVE_CHUNK = 200
"""SOP Instance UIDs per image-level C-MOVE identifier (a UID list, PS3.4 C.2.2.2.2)."""


class TransientFailure(Exception):
    """Worth another try later: the node is busy, down, or dropped the association."""


class Deferred(Exception):
    """Not now: the node's circuit breaker is open, or the time window is closed."""


@dataclass(frozen=True)
class PullContext:
    """What pulling studies from one node needs, built once per retrieval run."""

    peer: Peer
    job_id: str
    destination: str
    ledger: MoveLedger
    breaker: CircuitBreaker
    catalog: CatalogStore
    policy: Policy
    keys: Pseudonymizer
    window: str | None = None
    wait_for_window: bool = True

    def archive_uid(self, keyword: str, original: str) -> str | None:
        """The UID the archive gives the study, series or instance `original`."""
        return archived_uids(self.policy, self.keys, {keyword: original}).get(keyword)


def gate(ctx: PullContext, sleep: Callable[[float], None] = time.sleep) -> None:
    """Wait for the time window (or raise `Deferred`); `Deferred` too while the breaker is open."""
    until = ctx.breaker.open_until()
    if until is not None:
        reopen = datetime.fromtimestamp(until).strftime("%Y-%m-%d %H:%M:%S")
        raise Deferred(f"circuit breaker open for {ctx.peer.name} until {reopen}")
    wait = seconds_until_open(ctx.window, datetime.now())
    if wait > 0:
        if not ctx.wait_for_window:
            raise Deferred(f"outside the retrieval window {ctx.window}")
        LOGGER.info("outside the retrieval window %s: waiting %.0f s", ctx.window, wait)
        sleep(wait)
        if not in_window(ctx.window, datetime.now()):
            raise Deferred(f"outside the retrieval window {ctx.window}")


@contextmanager
def talking_to(ctx: PullContext) -> Iterator[None]:
    """Count connection failures against the node's breaker; make them `TransientFailure`.

    A node that answers (even with a failure status) is reachable: that closes the
    count. A rejection the node calls permanent (unknown AE title, say) is raised as
    it is: asking again cannot help.
    """
    try:
        yield
    except QueryError:
        ctx.breaker.success()
        raise
    except ScuError as exc:
        if ctx.breaker.failure():
            LOGGER.warning(
                "circuit breaker for %s opened after %d failures in a row: leaving it alone "
                "for %.0f s",
                ctx.peer.name,
                ctx.breaker.failures,
                ctx.breaker.cooldown,
            )
        if isinstance(exc, AssociationRejected) and not exc.transient:
            raise
        raise TransientFailure(str(exc)) from exc
    ctx.breaker.success()


def resolve(ctx: PullContext, request: StudyRequest) -> list[str]:
    """The Study Instance UIDs on the node that match the request (study-level C-FIND)."""
    identifier = build_identifier("study", "STUDY", request.keys)
    with talking_to(ctx):
        result = find(ctx.peer, "study", identifier)
    uids = [str(m.StudyInstanceUID) for m in result.matches if m.get("StudyInstanceUID")]
    return list(dict.fromkeys(uids))


def image_uids(ctx: PullContext, study_uid: str, series_uid: str) -> list[str]:
    """The SOP Instance UIDs of one series on the node (image-level C-FIND)."""
    keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
    with talking_to(ctx):
        result = find(ctx.peer, "study", build_identifier("study", "IMAGE", keys))
    return [str(m.SOPInstanceUID) for m in result.matches if m.get("SOPInstanceUID")]


def series_expected(ctx: PullContext, study_uid: str) -> dict[str, int]:
    """Instances per series the node holds: Number of Series Related Instances, or, from
    a node that does not return it, a count of the series' instances."""
    keys = {"StudyInstanceUID": study_uid}
    with talking_to(ctx):
        result = find(ctx.peer, "study", build_identifier("study", "SERIES", keys))
    expected: dict[str, int] = {}
    for match in result.matches:
        series_uid = str(match.get("SeriesInstanceUID") or "")
        if not series_uid:
            continue
        try:
            expected[series_uid] = int(match.get("NumberOfSeriesRelatedInstances"))
        except (TypeError, ValueError):
            expected[series_uid] = len(image_uids(ctx, study_uid, series_uid))
    return expected


def _catalog_rows(ctx: PullContext, sql: str, parameters: list[object]) -> list[tuple[Any, ...]]:
    """Rows of one query over the catalog as it is now."""
    con = catalog.connect(ctx.catalog)
    try:
        return con.execute(sql, parameters).fetchall()
    finally:
        con.close()


def archived_by_series(ctx: PullContext, study_uid: str, series: list[str]) -> dict[str, int]:
    """Instances the catalog holds per series (keyed by the node's Series UIDs)."""
    archived_study = ctx.archive_uid("StudyInstanceUID", study_uid)
    by_archive_uid = {ctx.archive_uid("SeriesInstanceUID", s): s for s in series}
    rows = _catalog_rows(
        ctx,
        "SELECT series_instance_uid, count(*) FROM instances "
        "WHERE study_instance_uid = ? GROUP BY ALL",
        [archived_study],
    )
    counts = {s: 0 for s in series}
    for archive_uid, count in rows:
        if archive_uid in by_archive_uid:
            counts[by_archive_uid[archive_uid]] = int(count)
    return counts


def archived_instances(ctx: PullContext, sop_uids: list[str]) -> set[str]:
    """Which of the node's SOP Instance UIDs the catalog holds."""
    by_archive_uid = {ctx.archive_uid("SOPInstanceUID", u): u for u in sop_uids}
    rows = _catalog_rows(
        ctx,
        "SELECT sop_instance_uid FROM instances WHERE sop_instance_uid IN "
        "(SELECT unnest(?::VARCHAR[]))",
        [[u for u in by_archive_uid if u]],
    )
    return {by_archive_uid[row[0]] for row in rows}


def move_keys(ctx: PullContext, level: str, keys: dict[str, str]) -> MoveResult:
    """One C-MOVE to our destination, under a Message ID the ledger ties to the job."""
    identifier = move_identifier("study", level, keys)  # type: ignore[arg-type]
    with ctx.ledger.opened(ctx.peer.calling_ae, ctx.job_id) as message_id, talking_to(ctx):
        return move(ctx.peer, "study", identifier, ctx.destination, message_id)


def _moved(outcome: StudyOutcome, result: MoveResult) -> StudyOutcome:
    progress = result.progress
    return outcome.with_(
        moved=outcome.moved + progress.completed,
        failed=outcome.failed + progress.failed,
        warning=outcome.warning + progress.warning,
        last_status=result.meaning,
    )


def _failure_message(result: MoveResult, destination: str) -> str:
    message = result.meaning + (f" ({result.comment})" if result.comment else "")
    if result.hint:
        return f"{message}: {result.hint}"
    if result.progress.completed == 0 and result.progress.failed == 0:
        return (
            f"{message}: the node reported no sub-operation; if nothing arrived, does it "
            f"know {destination!r} (AE title, host, port)?"
        )
    return message


def pull_study(ctx: PullContext, row: int, study_uid: str) -> StudyOutcome:
    """Find what the node holds of one study; move it unless the archive has it all.

    Returns the outcome ``pending`` (moved, not yet checked), ``skipped``, ``failed``
    or ``deferred``; raises `TransientFailure` for what a retry may fix.
    """
    outcome = StudyOutcome(
        ctx.job_id, row, "pending", study_uid, ctx.archive_uid("StudyInstanceUID", study_uid)
    )
    expected = series_expected(ctx, study_uid)
    outcome = outcome.with_(series_expected=expected, expected=sum(expected.values()))
    archived = archived_by_series(ctx, study_uid, list(expected))
    outcome = outcome.with_(archived=sum(min(archived[s], n) for s, n in expected.items()))
    if expected and not shortfall(expected, archived).series:
        return outcome.with_(state="skipped", message="already complete in the archive")
    try:
        gate(ctx)
    except Deferred as why:
        return outcome.with_(state="deferred", message=str(why))
    result = move_keys(ctx, "STUDY", {"StudyInstanceUID": study_uid})
    outcome = _moved(outcome, result)
    if result.category == "Failure":
        if result.permanent:
            return outcome.with_(state="failed", message=_failure_message(result, ctx.destination))
        raise TransientFailure(_failure_message(result, ctx.destination))
    if result.category == "Cancel":
        return outcome.with_(state="failed", message="the node cancelled the move")
    return outcome


def pull_request(ctx: PullContext, request: StudyRequest) -> list[StudyOutcome]:
    """Every study one job row names, each found, compared and moved (`pull_study`)."""
    if not request.keys:
        message = "the row names no StudyInstanceUID, AccessionNumber or PatientID"
        return [StudyOutcome(ctx.job_id, request.row, "invalid", message=message)]
    try:
        gate(ctx)
    except Deferred as why:
        return [StudyOutcome(ctx.job_id, request.row, "deferred", message=str(why))]
    try:
        studies = resolve(ctx, request)
    except QueryError as exc:
        return [StudyOutcome(ctx.job_id, request.row, "failed", message=str(exc))]
    if not studies:
        return [StudyOutcome(ctx.job_id, request.row, "not-found", message="no study matches")]
    return [pull_study(ctx, request.row, uid) for uid in studies]


def check(ctx: PullContext, outcome: StudyOutcome) -> StudyOutcome:
    """Count what the archive holds of a moved study; ``complete`` when nothing is short."""
    expected = outcome.series_expected
    archived = archived_by_series(ctx, str(outcome.study_uid), list(expected))
    short = shortfall(expected, archived)
    total = sum(min(archived[s], n) for s, n in expected.items())
    if short.series:
        message = f"{short.missing} of {sum(expected.values())} instances missing"
        return outcome.with_(archived=total, message=message)
    return outcome.with_(state="complete", archived=total, message=None)


def rerequest(ctx: PullContext, outcome: StudyOutcome, round_no: int) -> StudyOutcome:
    """Ask again for what a moved study lacks: whole series first, then single images.

    Some PACSes move part of a series and report success; an image-level C-MOVE of
    exactly the missing SOP instances is the last resort.
    """
    study_uid = str(outcome.study_uid)
    expected = outcome.series_expected
    short = shortfall(expected, archived_by_series(ctx, study_uid, list(expected)))
    for series_uid in short.series:
        keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        if round_no == 1:
            outcome = _moved(outcome, move_keys(ctx, "SERIES", keys))
            continue
        uids = image_uids(ctx, study_uid, series_uid)
        have = archived_instances(ctx, uids)
        missing = [u for u in uids if u not in have]
        for start in range(0, len(missing), IMAGE_MOVE_CHUNK):
            chunk = missing[start : start + IMAGE_MOVE_CHUNK]
            image_keys = {**keys, "SOPInstanceUID": "\\".join(chunk)}
            outcome = _moved(outcome, move_keys(ctx, "IMAGE", image_keys))
    return outcome.with_(rerequests=outcome.rerequests + 1)
