"""Out of the catalog: query results as a table, CSV, JSON Lines or Parquet, and the
whole catalog as one DuckDB database file.

CSV and Parquet are written by DuckDB itself, for a file and for standard output
alike, so the two never disagree on how a value looks.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import duckdb

from catalog.query import attach, create_views, history_view
from catalog.schema import ALL_TABLES
from catalog.store import CatalogStore
from receiver.durable import fsync_dir, temp_path_for

FORMATS = ("table", "csv", "json", "parquet")
SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class ExportError(ValueError):
    """A result that cannot be written as asked."""


def choose_format(fmt: str | None, out: Path | None) -> str:
    """The format asked for, else the one `out`'s suffix names, else a table."""
    if fmt:
        return fmt
    if out is None:
        return "table"
    try:
        return SUFFIXES[out.suffix.lower()]
    except KeyError:
        known = ", ".join(SUFFIXES)
        raise ExportError(f"cannot tell the format of {out} ({known}); use --format") from None


def write_json_lines(relation: duckdb.DuckDBPyRelation, stream: TextIO) -> int:
    """One JSON object per row; dates, times and decimals as their ISO or decimal text."""
    rows = 0
    for row in relation.to_dicts():
        stream.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
        rows += 1
    return rows


def export(
    relation: duckdb.DuckDBPyRelation, fmt: str, out: Path | None, max_rows: int = 50
) -> int | None:
    """Write `relation` as `fmt` to `out` (standard output when None); rows written if known."""
    if fmt == "table":
        if out is not None:
            raise ExportError("a table is for the screen; use --format csv, json or parquet")
        relation.show(max_rows=max_rows)
        return None
    if fmt == "parquet" and out is None:
        raise ExportError("Parquet is binary: give --out FILE")
    if out is not None and not out.parent.is_dir():
        raise ExportError(f"folder {out.parent} does not exist")
    if fmt == "json":
        if out is None:
            return write_json_lines(relation, sys.stdout)
        with out.open("w", encoding="utf-8") as fh:
            return write_json_lines(relation, fh)
    if out is not None:
        _write_with_duckdb(relation, fmt, out)
        return len(relation)
    # DuckDB would open /dev/stdout afresh and truncate a file the shell appends to.
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / f"result.{fmt}"
        _write_with_duckdb(relation, fmt, result)
        sys.stdout.flush()
        with result.open("rb") as fh:
            shutil.copyfileobj(fh, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    return len(relation)


def _write_with_duckdb(relation: duckdb.DuckDBPyRelation, fmt: str, path: Path) -> None:
    if fmt == "csv":
        relation.write_csv(str(path), header=True)
    else:
        relation.write_parquet(str(path))


def export_database(store: CatalogStore, out: Path) -> dict[str, int]:
    """Write the catalog as it is now into a DuckDB file at `out`; rows per history table.

    The file holds each table's rows as DuckDB tables (``<table>_history``,
    ``receipts``, ``superseded``) and the same views and macros as
    `catalog.connect`, with column descriptions as comments: a snapshot that
    needs neither the Parquet parts nor dicomflow. It replaces `out` atomically.
    """
    if not out.parent.is_dir():
        raise ExportError(f"folder {out.parent} does not exist")
    tmp = temp_path_for(out)
    counts: dict[str, int] = {}
    try:
        source = duckdb.connect()
        try:
            attach(source, store, store.read_manifest())
            source.execute("ATTACH ? AS exported", [str(tmp)])
            for table in ALL_TABLES:
                name = history_view(table)
                source.execute(f"CREATE TABLE exported.{name} AS SELECT * FROM {name}")
                counts[name] = source.execute(
                    f"SELECT count(*) FROM exported.{name}"
                ).fetchall()[0][0]
            source.execute("CREATE TABLE exported.dicom_keywords AS SELECT * FROM dicom_keywords")
            source.execute("DETACH exported")
        finally:
            source.close()
        target = duckdb.connect(str(tmp))
        try:
            create_views(target, temp=False)
            for table in ALL_TABLES:
                for column in table.columns:
                    target.execute(
                        f"COMMENT ON COLUMN {history_view(table)}.{column.name} IS "
                        + _sql_text(column.description)
                    )
            target.execute("CHECKPOINT")
        finally:
            target.close()
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
    return counts


def _sql_text(value: str) -> str:
    """A string literal for our own column descriptions (COMMENT ON takes no parameters)."""
    return "'" + value.replace("'", "''") + "'"
