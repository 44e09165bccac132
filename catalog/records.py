"""Recording one batch: instance versions, and new versions of every unit they change.

Given the instance rows of a batch, `record_batch` adds the versions the catalog
lacks, then writes a new version of each series, study and patient (and record
of the configured unit) whose current instances changed: counts, sizes and
modalities recomputed over all its current instances, not just this batch's.
The version each new row replaces is named in `superseded`. Everything goes out
in one manifest swap: after a crash the batch is recorded whole or not at all,
and running it again adds only what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import PurePosixPath
from typing import Any

import duckdb
import pyarrow as pa

from catalog.query import attach
from catalog.schema import KEYS, RECORD_UNITS, TABLE_BY_NAME, UNIT_TABLES, arrow_schema
from catalog.store import CatalogStore

InstanceRows = Mapping[str, Mapping[str, Any]]
"""One archived instance: ``{"instances": {...}, "series": {...}, "studies": {...}, ...}``."""

UNIT_OF_TABLE = {"patients": "patient", "studies": "study", "series": "series"}
TABLE_OF_UNIT = {unit: table for table, unit in UNIT_OF_TABLE.items()}
_LEVEL = {"patients": 1, "studies": 2, "series": 3}
"""How many archive folders deep a unit sits: patient/study/series/."""

_NEEDED = (
    "sop_instance_uid, version, series_instance_uid, study_instance_uid, patient_id,"
    " modality, file_size, archive_relpath"
)

_AGGREGATES = {
    "series": """
SELECT series_instance_uid AS key, count(*) AS num_instances, sum(file_size) AS total_bytes
FROM after WHERE series_instance_uid IN (SELECT key FROM affected_series) GROUP BY ALL""",
    "studies": """
SELECT study_instance_uid AS key, count(DISTINCT series_instance_uid) AS num_series,
       count(*) AS num_instances, sum(file_size) AS total_bytes,
       string_agg(DISTINCT modality, ',' ORDER BY modality) AS modalities
FROM after WHERE study_instance_uid IN (SELECT key FROM affected_studies) GROUP BY ALL""",
    "patients": """
SELECT patient_id AS key, count(DISTINCT study_instance_uid) AS num_studies,
       count(DISTINCT series_instance_uid) AS num_series, count(*) AS num_instances,
       sum(file_size) AS total_bytes,
       string_agg(DISTINCT modality, ',' ORDER BY modality) AS modalities
FROM after GROUP BY ALL""",
}

_ZERO = {"num_studies": 0, "num_series": 0, "num_instances": 0, "total_bytes": 0}


@dataclass(frozen=True)
class Recorded:
    """What `record_batch` added: instance versions, and unit versions per table."""

    instances: int
    units: dict[str, int]


def _dicts(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[dict]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _table(rows: Sequence[Mapping[str, Any]], table: str) -> pa.Table:
    names = TABLE_BY_NAME[table].names
    return pa.Table.from_pylist([{n: r.get(n) for n in names} for r in rows], arrow_schema(table))


def _folder(relpath: str | None, table: str) -> str | None:
    if not relpath:
        return None
    return PurePosixPath(*PurePosixPath(relpath).parts[: _LEVEL[table]]).as_posix()


def fresh_versions(
    con: duckdb.DuckDBPyConnection, batch: Sequence[InstanceRows]
) -> list[InstanceRows]:
    """The batch's instance versions the catalog lacks, first occurrence of each."""
    seen: set[tuple[str, int]] = set()
    unique = []
    for rows in batch:
        ident = (rows["instances"]["sop_instance_uid"], rows["instances"]["version"])
        if ident not in seen:
            seen.add(ident)
            unique.append(rows)
    if not unique:
        return []
    con.register("batch_keys", pa.table({"uid": [u for u, _ in seen]}))
    known = con.execute(
        "SELECT sop_instance_uid, version FROM instances_history"
        " WHERE sop_instance_uid IN (SELECT uid FROM batch_keys)"
    ).fetchall()
    con.unregister("batch_keys")
    recorded = {(str(u), int(v)) for u, v in known}
    return [
        r
        for r in unique
        if (r["instances"]["sop_instance_uid"], r["instances"]["version"]) not in recorded
    ]


def fill_calling_ae(con: duckdb.DuckDBPyConnection, fresh: Sequence[dict[str, Any]]) -> None:
    """Calling AE titles the file did not carry, from the receipts of their landed files."""
    missing = [r for r in fresh if not r.get("calling_ae_title") and r.get("landed_name")]
    if not missing:
        return
    received = [r["received_at"] for r in missing if r.get("received_at")]
    since: date = min(received).date() if received else date(1970, 1, 1)
    con.register("wanted", pa.table({"name": [r["landed_name"] for r in missing]}))
    found = dict(
        con.execute(
            "SELECT landed_name, any_value(calling_ae_title) FROM receipts"
            " WHERE success AND ingest_date >= ? AND landed_name IN (SELECT name FROM wanted)"
            " GROUP BY ALL",
            [since],
        ).fetchall()
    )
    con.unregister("wanted")
    for row in missing:
        row["calling_ae_title"] = found.get(row["landed_name"])


def record_batch(
    store: CatalogStore,
    batch: Sequence[InstanceRows],
    record_unit: str = "study",
    run_id: str = "local",
    now: datetime | None = None,
) -> Recorded:
    """Add the batch's unrecorded instance versions and the unit versions they cause."""
    if record_unit not in RECORD_UNITS:
        raise ValueError(f"record unit must be one of {', '.join(RECORD_UNITS)}")
    now = now or datetime.now(UTC)
    con = duckdb.connect()
    try:
        attach(con, store, store.read_manifest())
        fresh = fresh_versions(con, batch)
        if not fresh:
            return Recorded(0, {})
        instances = [dict(r["instances"]) | {"run_id": run_id, "recorded_at": now} for r in fresh]
        for row in instances:
            row.setdefault("created_at", now)
        fill_calling_ae(con, instances)
        tables = _unit_versions(con, fresh, instances, record_unit, run_id, now)
    finally:
        con.close()
    tables["instances"] = instances
    store.append({name: _table(rows, name) for name, rows in tables.items()})
    return Recorded(
        len(instances), {t: len(tables[t]) for t in (*UNIT_TABLES, "records") if tables.get(t)}
    )


def _unit_versions(
    con: duckdb.DuckDBPyConnection,
    fresh: Sequence[InstanceRows],
    instances: list[dict[str, Any]],
    record_unit: str,
    run_id: str,
    now: datetime,
) -> dict[str, list[dict[str, Any]]]:
    """New unit and record versions, the superseded rows, and each instance's created_at."""
    con.register("fresh", _table(instances, "instances"))
    # The version each fresh instance replaces, and its place (it may have moved).
    con.execute(
        f"CREATE TEMP TABLE previous AS SELECT {_NEEDED}, created_at, ingest_date FROM instances"
        " WHERE sop_instance_uid IN (SELECT sop_instance_uid FROM fresh)"
    )
    con.execute(
        f"CREATE TEMP TABLE winners AS SELECT {_NEEDED} FROM"
        f" (SELECT {_NEEDED} FROM previous UNION ALL SELECT {_NEEDED} FROM fresh)"
        " QUALIFY row_number() OVER (PARTITION BY sop_instance_uid ORDER BY version DESC) = 1"
    )
    superseded: list[dict[str, Any]] = []
    first_seen = dict(con.execute("SELECT sop_instance_uid, created_at FROM previous").fetchall())
    for row in instances:
        row["created_at"] = first_seen.get(row["sop_instance_uid"], now)
    replaced = con.execute(
        "SELECT r.sop_instance_uid, r.version, p.ingest_date FROM"
        f" (SELECT sop_instance_uid, version FROM (SELECT {_NEEDED} FROM previous"
        f" UNION ALL SELECT {_NEEDED} FROM fresh)"
        " EXCEPT SELECT sop_instance_uid, version FROM winners) r"
        " LEFT JOIN previous p USING (sop_instance_uid, version)"
    ).fetchall()
    superseded += [
        {"table_name": "instances", "key": k, "version": v, "replaced_ingest_date": day}
        for k, v, day in replaced
    ]

    for table, column in (
        ("patients", "patient_id"),
        ("studies", "study_instance_uid"),
        ("series", "series_instance_uid"),
    ):
        con.execute(
            f"CREATE TEMP TABLE affected_{table} AS SELECT DISTINCT {column} AS key FROM"
            f" (SELECT {column} FROM previous UNION ALL SELECT {column} FROM fresh)"
        )
    con.execute(
        f"CREATE TEMP TABLE after AS SELECT {_NEEDED} FROM instances"
        " WHERE patient_id IN (SELECT key FROM affected_patients)"
        " AND sop_instance_uid NOT IN (SELECT sop_instance_uid FROM winners)"
        f" UNION ALL SELECT {_NEEDED} FROM winners"
    )

    tables: dict[str, list[dict[str, Any]]] = {}
    latest_attrs: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in UNIT_TABLES}
    folders: dict[str, dict[str, str | None]] = {t: {} for t in UNIT_TABLES}
    for rows, instance in zip(fresh, instances, strict=True):
        for table in UNIT_TABLES:
            key = rows[table][KEYS[table]]
            latest_attrs[table][key] = dict(rows[table])
            folders[table][key] = _folder(instance.get("archive_relpath"), table)
    for table in UNIT_TABLES:
        key = KEYS[table]
        counts = {r.pop("key"): r for r in _dicts(con, _AGGREGATES[table])}
        previous = {
            r[key]: r
            for r in _dicts(
                con,
                f"SELECT * FROM {table} WHERE {key} IN (SELECT key FROM affected_{table})",
            )
        }
        keys = [r[0] for r in con.execute(f"SELECT key FROM affected_{table}").fetchall()]
        new_rows = []
        for value in sorted(keys):
            before = previous.get(value)
            attrs = latest_attrs[table].get(value) or dict(before or {KEYS[table]: value})
            attrs.pop("ingest_date", None)
            row = attrs | _ZERO | counts.get(value, {})
            row.update(
                version=(before["version"] + 1) if before else 1,
                created_at=before["created_at"] if before else now,
                archive_folder=folders[table].get(value) or (before or {}).get("archive_folder"),
                run_id=run_id,
                recorded_at=now,
            )
            if before:
                superseded.append(
                    {
                        "table_name": table,
                        "key": value,
                        "version": before["version"],
                        "replaced_ingest_date": before["ingest_date"],
                    }
                )
            new_rows.append(row)
        tables[table] = new_rows

    tables["records"] = _records(con, tables[TABLE_OF_UNIT[record_unit]], record_unit, now)
    superseded += [
        {
            "table_name": "records",
            "key": r["record_key"],
            "version": r["version"] - 1,
            "replaced_ingest_date": r.get("replaced_ingest_date"),
        }
        for r in tables["records"]
        if r["version"] > 1
    ]
    for row in superseded:
        row.update(run_id=run_id, recorded_at=now)
    tables["superseded"] = superseded
    return tables


def _records(
    con: duckdb.DuckDBPyConnection, units: list[dict[str, Any]], record_unit: str, now: datetime
) -> list[dict[str, Any]]:
    """The configured unit's new versions, in the shape of the records table."""
    table = TABLE_OF_UNIT[record_unit]
    key = KEYS[table]
    con.register(
        "record_keys", pa.table({"key": [u[key] for u in units]}, pa.schema([("key", pa.string())]))
    )
    previous = {
        r["record_key"]: r
        for r in _dicts(
            con,
            "SELECT record_key, version, created_at, ingest_date FROM records"
            " WHERE record_key IN (SELECT key FROM record_keys)",
        )
    }
    con.unregister("record_keys")
    rows = []
    for unit in units:
        before = previous.get(unit[key])
        has = int(unit["num_instances"] > 0)
        if record_unit != "patient":
            unit = unit | {"num_studies": has}
        if record_unit == "series":
            unit = unit | {"num_series": has}
        rows.append(
            {
                "record_unit": record_unit,
                "record_key": unit[key],
                "patient_id": unit.get("patient_id"),
                "study_instance_uid": unit.get("study_instance_uid"),
                "series_instance_uid": unit.get("series_instance_uid"),
                "num_studies": unit["num_studies"],
                "num_series": unit["num_series"],
                "num_instances": unit["num_instances"],
                "modalities": unit.get("modalities", unit.get("modality")),
                "total_bytes": unit["total_bytes"],
                "archive_folder": unit.get("archive_folder"),
                "version": (before["version"] + 1) if before else 1,
                "created_at": before["created_at"] if before else now,
                "updated_at": now,
                "run_id": unit["run_id"],
                "recorded_at": now,
                # not a column: where the version this one replaces lives, for `superseded`
                "replaced_ingest_date": before["ingest_date"] if before else None,
            }
        )
    return rows
