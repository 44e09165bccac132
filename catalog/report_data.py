"""The numbers behind `dicomflow report`: DuckDB queries over the catalog's views, shaped.

Pure: a connection in (``catalog.connect()``), plain rows out, no drawing. Only counts,
sizes, modalities, SOP classes and transfer syntaxes leave the catalog: no patient
pseudonym, UID or description, so the page can be shared. Days are UTC dates, like
the catalog's partitions. An instance counts on the day it arrived (received by our
receiver, else first recorded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb
from pydicom.uid import UID

TOP = 10
"""SOP classes and transfer syntaxes shown by name; the rest are added up as one row."""

_ARRIVED = """
WITH arrived AS (
    SELECT (coalesce(received_at, created_at) AT TIME ZONE 'UTC')::DATE AS day,
           study_instance_uid, modality, sop_class_uid, transfer_syntax_uid, file_size
    FROM instances
), chosen AS (SELECT * FROM arrived WHERE $since::DATE IS NULL OR day >= $since::DATE)
"""

_PER_DAY = (
    _ARRIVED
    + """
SELECT day, count(*) AS instances, count(DISTINCT study_instance_uid) AS studies
FROM chosen GROUP BY day ORDER BY day
"""
)

_MODALITIES = (
    _ARRIVED
    + """
SELECT coalesce(nullif(modality, ''), '(none)') AS modality, count(*) AS instances
FROM chosen GROUP BY ALL ORDER BY instances DESC, modality
"""
)

_BY_UID = (
    _ARRIVED
    + """
SELECT coalesce(nullif({column}, ''), '(none)') AS uid, count(*) AS instances
FROM chosen GROUP BY ALL ORDER BY instances DESC, uid
"""
)

_GROWTH = (
    _ARRIVED
    + """
SELECT day, total FROM (
    SELECT day, sum(sum(file_size)) OVER (ORDER BY day)::BIGINT AS total
    FROM arrived GROUP BY day
) WHERE $since::DATE IS NULL OR day >= $since::DATE ORDER BY day
"""
)
"""Bytes of the current instances that had arrived by each day; before `since` counts too."""

_QUARANTINE = """
SELECT (quarantined_at AT TIME ZONE 'UTC')::DATE AS day, reason, count(*) AS files
FROM quarantine_history
WHERE event = 'quarantined' AND ($since::DATE IS NULL OR day >= $since::DATE)
GROUP BY ALL ORDER BY day, reason
"""

_TOTALS = """
SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM studies),
       (SELECT count(*) FROM series), (SELECT count(*) FROM instances),
       (SELECT coalesce(sum(file_size), 0)::BIGINT FROM instances),
       (SELECT count(*) FROM quarantine), (SELECT count(*) FROM quarantine_history)
"""


@dataclass(frozen=True)
class Totals:
    """The whole catalog now, whatever `since` says."""

    patients: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    archive_bytes: int = 0
    in_quarantine: int = 0
    quarantine_events: int = 0


@dataclass(frozen=True)
class ReportData:
    """Everything the report draws; each list is ordered as it is shown."""

    since: date | None
    totals: Totals
    per_day: list[tuple[date, int, int]] = field(default_factory=list)
    """(day, instances arrived, distinct studies they belong to)."""
    modalities: list[tuple[str, int]] = field(default_factory=list)
    sop_classes: list[tuple[str, int]] = field(default_factory=list)
    """(SOP class name from pydicom's UID dictionary, or the UID if private, instances)."""
    transfer_syntaxes: list[tuple[str, int]] = field(default_factory=list)
    quarantine: list[tuple[date, str, int]] = field(default_factory=list)
    """(day, reason, files quarantined that day)."""
    archive_growth: list[tuple[date, int]] = field(default_factory=list)
    """(day, bytes of current instances arrived by then)."""

    @property
    def empty(self) -> bool:
        """Nothing ever archived or quarantined: a catalog with nothing to show."""
        return self.totals.instances == 0 and self.totals.quarantine_events == 0


def uid_name(uid: str) -> str:
    """A SOP class's or transfer syntax's name from pydicom's dictionary, else the UID."""
    return UID(uid).name if uid != "(none)" else uid


def top_named(rows: list[tuple[str, int]], top: int = TOP) -> list[tuple[str, int]]:
    """(UID, count) rows by name, the most frequent `top`, the rest added up as one row."""
    named = [(uid_name(uid), n) for uid, n in rows]
    if len(named) <= top:
        return named
    rest = named[top - 1 :]
    return [*named[: top - 1], (f"{len(rest)} others", sum(n for _, n in rest))]


def _rows(con: duckdb.DuckDBPyConnection, sql: str, since: date | None) -> list[Any]:
    return con.execute(sql, {"since": since}).fetchall()


def gather(con: duckdb.DuckDBPyConnection, since: date | None = None) -> ReportData:
    """Run the report's queries on `con`; rows from `since` (a UTC day) on, or all."""
    totals = Totals(*(int(v) for v in con.execute(_TOTALS).fetchone() or ()))
    return ReportData(
        since=since,
        totals=totals,
        per_day=[(d, int(i), int(s)) for d, i, s in _rows(con, _PER_DAY, since)],
        modalities=[(str(m), int(n)) for m, n in _rows(con, _MODALITIES, since)],
        sop_classes=top_named(_rows(con, _BY_UID.format(column="sop_class_uid"), since)),
        transfer_syntaxes=top_named(
            _rows(con, _BY_UID.format(column="transfer_syntax_uid"), since)
        ),
        quarantine=[(d, str(r), int(n)) for d, r, n in _rows(con, _QUARANTINE, since)],
        archive_growth=[(d, int(b)) for d, b in _rows(con, _GROWTH, since)],
    )
