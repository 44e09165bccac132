"""Reading the catalog: a DuckDB connection with one view per table.

The parts the manifest lists at connect time are what the views see: a
consistent snapshot while the autoloader keeps writing and compaction merges.
For each versioned table, ``<table>_history`` holds every version ever written
and ``<table>`` the current one per key; ``receipts`` and ``superseded`` are
append-only and have one view each. ``quarantine`` shows the files in
quarantine now.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from pydicom.datadict import DicomDictionary

from catalog.current import current_parts
from catalog.schema import (
    ALL_TABLES,
    PARTITION_COLUMN,
    Table,
    arrow_schema,
    duckdb_type,
    layout,
)
from catalog.store import CatalogStore, Manifest, Part, open_store

_CURRENT = """
CREATE OR REPLACE {temp} VIEW {view} AS
SELECT h.* FROM {name}_history h
ANTI JOIN (SELECT key, version FROM superseded WHERE table_name = '{name}') s
       ON h.{key} = s.key AND h.version = s.version
"""

_ALL_CURRENT = "CREATE OR REPLACE {temp} VIEW {view} AS SELECT * FROM {name}_history"

_IN_QUARANTINE = """
CREATE OR REPLACE {temp} VIEW quarantine AS
SELECT * EXCLUDE (event) FROM quarantine_current WHERE event = 'quarantined'
"""

_MACROS = """
CREATE OR REPLACE {temp} MACRO dicom_tag(name) AS
    (SELECT tag FROM dicom_keywords WHERE keyword = name);
CREATE OR REPLACE {temp} MACRO dicom_value(header, name) AS
    json_extract_string(header, '$."' || dicom_tag(name) || '".Value[0]');
"""
"""``dicom_value(dicom_json, 'SliceThickness')``: an attribute's first value by keyword."""


def history_view(table: Table) -> str:
    """The name of the view (or exported table) holding every row `table` ever got."""
    return f"{table.name}_history" if table.versioned else table.name


def with_partition(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field(PARTITION_COLUMN, pa.date32()))


@functools.cache
def dicom_keywords() -> tuple[list[str], list[str]]:
    """DICOM keywords, and each one's tag as DICOM JSON spells it (``00180050``), from
    pydicom's dictionary."""
    pairs = sorted((entry[4], f"{tag:08X}") for tag, entry in DicomDictionary.items() if entry[4])
    return [k for k, _ in pairs], [t for _, t in pairs]


def superseded_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT DISTINCT table_name FROM superseded").fetchall()
    return {str(row[0]) for row in rows}


def create_views(con: duckdb.DuckDBPyConnection, temp: bool = True) -> None:
    """The current views over ``<table>_history`` and ``superseded``, which must exist.

    A table none of whose rows was ever superseded gets a plain view: nothing to hide.
    """
    kind = "TEMP" if temp else ""
    replaced = superseded_tables(con)
    for table in ALL_TABLES:
        if not table.versioned:
            continue
        # quarantine's own view keeps only the files still in quarantine
        view = f"{table.name}_current" if table.name == "quarantine" else table.name
        sql = _CURRENT if table.name in replaced else _ALL_CURRENT
        con.execute(sql.format(temp=kind, view=view, name=table.name, key=table.key))
    con.execute(_IN_QUARANTINE.format(temp=kind))
    con.execute(_MACROS.format(temp=kind))


def _columns(table: Table, have: set[str] | None) -> str:
    """The select list of `table` and its partition column, NULL for columns not in `have`.

    Parts written before a column existed lack it (schema evolution: parts are read
    by name, and compaction fills promoted columns from dicom_json).
    """
    return ", ".join(
        f'"{f.name}"'
        if have is not None and f.name in have
        else f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"'
        for f in with_partition(arrow_schema(table.name))
    )


def _read(
    con: duckdb.DuckDBPyConnection, store: CatalogStore, table: Table, parts: list[Part]
) -> duckdb.DuckDBPyRelation:
    """The rows of `parts`, with every column of `table` and the partition column."""
    if not parts:
        return con.sql(f"SELECT {_columns(table, None)} WHERE false")
    paths = [store.uri(p.path) for p in parts]
    if all(p.layout == layout(table.name) for p in parts):
        return con.read_parquet(paths, hive_partitioning=True)
    relation = con.read_parquet(paths, hive_partitioning=True, union_by_name=True)
    return relation.select(_columns(table, set(relation.columns)))


def attach(con: duckdb.DuckDBPyConnection, store: CatalogStore, manifest: Manifest) -> None:
    """Give `con` the catalog's views over the parts `manifest` lists."""
    if store.local_root is None:
        con.register_filesystem(store.fs)
    con.execute("SET parquet_metadata_cache = true")  # each query re-binds the views
    for table in ALL_TABLES:
        _read(con, store, table, manifest.of(table.name)).create_view(
            history_view(table), replace=True
        )
    # Plain lists, not an Arrow table: building one from Python imports pandas (0.5 s).
    con.execute(
        "CREATE TEMP TABLE dicom_keywords AS SELECT unnest(?) AS keyword, unnest(?) AS tag",
        list(dicom_keywords()),
    )
    plans = current_parts(con, store, manifest)
    for table in ALL_TABLES:
        if not table.versioned:
            continue
        plan = plans[table.name]
        view = f"{table.name}_current" if table.name == "quarantine" else table.name
        current = _read(con, store, table, plan.clean)
        if plan.check:
            replaced = con.table("superseded").filter(f"table_name = '{table.name}'")
            checked = (
                _read(con, store, table, plan.check)
                .set_alias("h")
                .join(
                    replaced.select("key, version").set_alias("s"),
                    f"h.{table.key} = s.key AND h.version = s.version",
                    how="anti",
                )
            )
            current = current.union(checked) if plan.clean else checked
        current.create_view(view, replace=True)
    con.execute(_IN_QUARANTINE.format(temp="TEMP"))
    con.execute(_MACROS.format(temp="TEMP"))


def connect(
    location: CatalogStore | Path | str = Path("dicomflow-data/catalog"),
    storage_options: Mapping[str, Any] | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog's views, as of now.

    `location` is the catalog folder or fsspec URL (``settings.catalog_location``).
    Reconnect to see later writes; a connection kept open longer than
    ``catalog.keep_replaced_seconds`` may find parts a compaction removed.
    """
    store = open_store(location, storage_options)
    con = duckdb.connect()
    attach(con, store, store.read_manifest())
    return con
