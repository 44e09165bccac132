"""Query results out of DuckDB: a table on screen, or CSV, JSON Lines or Parquet.

CSV and Parquet are written by DuckDB itself, for a file and for standard output
alike, so the two never disagree on how a value looks.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import duckdb

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
