"""Bulk retrieval, without an orchestrator: job lists, study outcomes and completeness.

A job is a list of studies to pull from a PACS, given by DICOM keyword columns:
``StudyInstanceUID``, or ``AccessionNumber``, or ``PatientID`` with an optional
``StudyDate`` (a DICOM date or range). Each row is resolved with a C-FIND, moved
with one C-MOVE per study, and checked against what the archive holds afterwards
(`completeness`), series by series.

Outcome rows hold original identifiers (the PACS's UIDs and accession numbers):
they are written under ``<data_dir>/retrieve/``, beside the landing zone, never
to the catalog; what a Prefect UI shows comes from `StudyOutcome.public`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from receiver.durable import write_atomic, write_atomic_with
from receiver.query import QueryError, parse_keys

REQUEST_KEYWORDS = ("StudyInstanceUID", "AccessionNumber", "PatientID", "StudyDate")

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A job id names a folder under ``retrieve/jobs``: one plain name, never a path."""
JOB_ID_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"

State = Literal[
    "complete",  # every expected instance is archived
    "incomplete",  # moved, but the archive is short after every re-request
    "skipped",  # complete in the archive before this run: nothing asked
    "failed",  # the node refused or failed the move
    "not-found",  # the C-FIND matched no study
    "deferred",  # not tried in this run: outside the window, breaker open, or the run's limit
    "invalid",  # the row names no study
    "pending",  # moved, completeness not checked yet
]


class JobError(ValueError):
    """A job list that cannot be read or names no studies; the message says why."""


@dataclass(frozen=True)
class StudyRequest:
    """One row of a job: what to look for (DICOM keyword -> matching value)."""

    row: int
    keys: dict[str, str]

    def describe(self) -> str:
        """For logs and errors, without patient data: only the row and which keys."""
        return f"row {self.row} ({', '.join(sorted(self.keys)) or 'no keys'})"


def _clean(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "strftime"):  # a date column read as a date
        return str(value.strftime("%Y%m%d"))
    return str(value).strip()


def requests_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[StudyRequest]:
    """Job rows -> requests; rows naming no study become requests with no keys."""
    requests = []
    for number, row in enumerate(rows, 1):
        by_keyword = {k: _clean(v) for k, v in row.items() if k in REQUEST_KEYWORDS}
        keys = {k: v for k, v in by_keyword.items() if v}
        if not any(k in keys for k in ("StudyInstanceUID", "AccessionNumber", "PatientID")):
            keys = {}
        requests.append(StudyRequest(number, keys))
    return requests


def load_job(path: Path | None = None, sql: str | None = None) -> list[StudyRequest]:
    """The requests of a CSV or Parquet job file, or of a DuckDB query's result.

    Column names are DICOM keywords, matched without regard to case; other columns
    are ignored. Raises `JobError` when nothing usable is found.
    """
    if (path is None) == (sql is None):
        raise JobError("give a job file or an SQL query, not both or neither")
    con = duckdb.connect()
    try:
        if path is not None:
            if not path.is_file():
                raise JobError(f"job file not found: {path}")
            suffix = path.suffix.lower()
            if suffix == ".csv":
                relation = con.read_csv(str(path), all_varchar=True, header=True)
            elif suffix == ".parquet":
                relation = con.read_parquet(str(path))
            else:
                raise JobError(f"{path.name}: a job file is .csv or .parquet")
        else:
            relation = con.sql(str(sql))
            if relation is None:
                raise JobError("the SQL statement returns no rows")
        names = {c.lower(): c for c in relation.columns}
        wanted = {k: names[k.lower()] for k in REQUEST_KEYWORDS if k.lower() in names}
        if not any(k in wanted for k in ("StudyInstanceUID", "AccessionNumber", "PatientID")):
            raise JobError(
                "the job has no StudyInstanceUID, AccessionNumber or PatientID column "
                f"(columns: {', '.join(relation.columns)})"
            )
        data = relation.select(*[f'"{c}"' for c in wanted.values()]).fetchall()
    except duckdb.Error as exc:
        raise JobError(f"cannot read the job: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    rows = [dict(zip(wanted, values, strict=True)) for values in data]
    if not rows:
        raise JobError("the job lists no studies")
    requests = requests_from_rows(rows)
    for request in requests:  # the values must be valid DICOM matching keys
        try:
            parse_keys(f"{k}={v}" for k, v in request.keys.items())
        except QueryError as exc:
            raise JobError(f"job {request.describe()}: {exc}") from None
    return requests


def check_job_id(job_id: str) -> str:
    """`job_id` if it is one plain folder name (`JOB_ID_PATTERN`); else `JobError`."""
    if not isinstance(job_id, str) or not re.fullmatch(JOB_ID_PATTERN, job_id):
        shown = repr(job_id) if len(str(job_id)) <= 70 else repr(str(job_id)[:60]) + "..."
        raise JobError(f"bad job id {shown}: a job id is {JOB_ID_RULE}")
    return job_id


def job_id_for(node: str, requests: list[StudyRequest]) -> str:
    """A stable id for the same list from the same node, so a re-run resumes it."""
    digest = hashlib.sha256(node.encode())
    for request in requests:
        digest.update(json.dumps(request.keys, sort_keys=True).encode())
    return f"job-{digest.hexdigest()[:12]}"


# --- the time window --------------------------------------------------------------------


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def in_window(window: str | None, now: datetime) -> bool:
    """Whether `now` (local time) falls in ``HH:MM-HH:MM``, which may wrap midnight."""
    if not window:
        return True
    start, end = (_minutes(t) for t in window.split("-"))
    minute = now.hour * 60 + now.minute
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def seconds_until_open(window: str | None, now: datetime) -> float:
    """How long until the window opens next (0 when it is open)."""
    if in_window(window, now) or not window:
        return 0.0
    start = _minutes(window.split("-")[0])
    opening = now.replace(hour=start // 60, minute=start % 60, second=0, microsecond=0)
    if opening <= now:
        opening += timedelta(days=1)
    return (opening - now).total_seconds()


# --- outcomes ---------------------------------------------------------------------------


@dataclass
class StudyOutcome:
    """What happened to one study of a job (or to a request that found none)."""

    job_id: str
    row: int
    state: State
    study_uid: str | None = None
    """The PACS's (original) Study Instance UID."""
    archived_study_uid: str | None = None
    """The same study's UID in our archive and catalog."""
    expected: int | None = None
    moved: int = 0
    failed: int = 0
    warning: int = 0
    archived: int = 0
    rerequests: int = 0
    last_status: str | None = None
    message: str | None = None
    series_expected: dict[str, int] = field(default_factory=dict)
    """Original Series Instance UID -> instances the PACS holds."""
    updated_at: float = field(default_factory=time.time)

    def with_(self, **changes: Any) -> StudyOutcome:
        return replace(self, updated_at=time.time(), **changes)

    def public(self) -> dict[str, Any]:
        """The row as shown in the Prefect UI: archive identifiers and counts only."""
        return {
            "row": self.row,
            "state": self.state,
            "study (archive UID)": self.archived_study_uid or "",
            "expected": self.expected,
            "moved": self.moved,
            "failed": self.failed,
            "warning": self.warning,
            "archived": self.archived,
            "re-requests": self.rerequests,
            "last status": self.last_status or "",
            "message": self.message or "",
        }


OUTCOME_SCHEMA = pa.schema(
    [
        ("job_id", pa.string()),
        ("row", pa.int64()),
        ("state", pa.string()),
        ("study_uid", pa.string()),
        ("archived_study_uid", pa.string()),
        ("expected", pa.int64()),
        ("moved", pa.int64()),
        ("failed", pa.int64()),
        ("warning", pa.int64()),
        ("archived", pa.int64()),
        ("rerequests", pa.int64()),
        ("last_status", pa.string()),
        ("message", pa.string()),
        ("updated_at", pa.timestamp("ms", tz="UTC")),
    ]
)


def job_dir(retrieve_dir: Path, job_id: str) -> Path:
    """The job's folder; `JobError` for an id that is not one plain name."""
    return retrieve_dir / "jobs" / check_job_id(job_id)


def write_outcomes(retrieve_dir: Path, job_id: str, outcomes: list[StudyOutcome]) -> Path:
    """The job's outcome table as Parquet (replaced atomically on every write)."""
    rows = []
    for outcome in outcomes:
        row = {name: getattr(outcome, name) for name in OUTCOME_SCHEMA.names}
        row["updated_at"] = datetime.fromtimestamp(outcome.updated_at).astimezone()
        rows.append(row)
    table = pa.Table.from_pylist(rows, OUTCOME_SCHEMA)
    path = job_dir(retrieve_dir, job_id) / "outcome.parquet"
    write_atomic_with(path, partial(pq.write_table, table, compression="zstd"))
    return path


def write_progress(retrieve_dir: Path, job_id: str, progress: Mapping[str, Any]) -> None:
    """A small JSON file a progress bar in another thread or process can follow."""
    path = job_dir(retrieve_dir, job_id) / "progress.json"
    write_atomic(path, json.dumps(dict(progress)).encode())


def read_progress(retrieve_dir: Path, job_id: str) -> dict[str, Any]:
    try:
        return dict(json.loads((job_dir(retrieve_dir, job_id) / "progress.json").read_text()))
    except (OSError, ValueError):
        return {}


# --- completeness -----------------------------------------------------------------------


@dataclass(frozen=True)
class Shortfall:
    """Series of a study the archive holds fewer instances of than the PACS."""

    series: dict[str, tuple[int, int]]
    """Original Series UID -> (expected, archived)."""

    @property
    def missing(self) -> int:
        return sum(max(0, e - a) for e, a in self.series.values())


def shortfall(expected: Mapping[str, int], archived: Mapping[str, int]) -> Shortfall:
    """Compare per-series counts (both keyed by original Series UID)."""
    short = {
        uid: (count, archived.get(uid, 0))
        for uid, count in expected.items()
        if archived.get(uid, 0) < count
    }
    return Shortfall(short)


def summary_counts(outcomes: Iterable[StudyOutcome]) -> dict[str, int]:
    """How many studies ended in each state."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.state] = counts.get(outcome.state, 0) + 1
    return counts


def outcome_dict(outcome: StudyOutcome) -> dict[str, Any]:
    return asdict(outcome)
