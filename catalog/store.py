"""Writing catalog rows: one new Parquet part per table per batch, made visible atomically."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from catalog.schema import KEYS, TABLES, arrow_schema
from receiver.durable import write_atomic_with

PART_GLOB = "part-*.parquet"

WRITE_ORDER = ("patients", "studies", "series", "instances")
"""Instances go last: an instance row present means its whole batch is recorded."""


def table_dir(catalog_dir: Path, table: str) -> Path:
    return catalog_dir / table


def part_files(catalog_dir: Path, table: str) -> list[Path]:
    """The Parquet parts of `table`, oldest first."""
    return sorted(table_dir(catalog_dir, table).glob(PART_GLOB))


def _dedupe(rows: Iterable[Mapping[str, Any]], key: str) -> list[Mapping[str, Any]]:
    """First row per key, in order: a batch describes each record once."""
    seen: set[Any] = set()
    kept = []
    for row in rows:
        if row[key] not in seen:
            seen.add(row[key])
            kept.append(row)
    return kept


def write_parts(catalog_dir: Path, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Path]:
    """Write each table's rows as one new Parquet part (fsynced, renamed); return the parts."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    batch = uuid.uuid4().hex[:12]
    written = []
    for table in WRITE_ORDER:
        table_rows = _dedupe(rows.get(table, []), KEYS[table])
        if not table_rows:
            continue
        schema = arrow_schema(table)
        names = [c.name for c in TABLES[table]]
        arrow = pa.Table.from_pylist([{n: r.get(n) for n in names} for r in table_rows], schema)
        final = table_dir(catalog_dir, table) / f"part-{stamp}-{batch}.parquet"
        write_atomic_with(final, partial(pq.write_table, arrow, compression="zstd"))
        written.append(final)
    return written


def recorded_instances(catalog_dir: Path, sop_instance_uids: Iterable[str]) -> set[str]:
    """Which of `sop_instance_uids` already have a row in the instances table."""
    wanted = list(set(sop_instance_uids))
    parts = part_files(catalog_dir, "instances")
    if not wanted or not parts:
        return set()
    con = duckdb.connect()
    try:
        found = (
            con.read_parquet([str(p) for p in parts])
            .filter(
                duckdb.ColumnExpression("sop_instance_uid").isin(
                    *[duckdb.ConstantExpression(u) for u in wanted]
                )
            )
            .select("sop_instance_uid")
            .fetchall()
        )
    finally:
        con.close()
    return {row[0] for row in found}
