"""Reading the catalog: a DuckDB connection with one view per table.

The parts the manifest lists at connect time are what the views see: a
consistent snapshot while the autoloader keeps writing and compaction merges.
For each versioned table, ``<table>_history`` holds every version ever written
and ``<table>`` the current one per key; ``receipts`` and ``superseded`` are
append-only and have one view each. ``quarantine`` shows the files in
quarantine now.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from pydicom.datadict import DicomDictionary

from catalog.schema import ALL_TABLES, PARTITION_COLUMN, Table, arrow_schema
from catalog.store import CatalogStore, Manifest, open_store

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


def dicom_keywords() -> pa.Table:
    """DICOM keyword -> tag as DICOM JSON spells it (``00180050``), from pydicom's dictionary."""
    pairs = sorted((entry[4], f"{tag:08X}") for tag, entry in DicomDictionary.items() if entry[4])
    return pa.table({"keyword": [k for k, _ in pairs], "tag": [t for _, t in pairs]})


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


def attach(con: duckdb.DuckDBPyConnection, store: CatalogStore, manifest: Manifest) -> None:
    """Give `con` the catalog's views over the parts `manifest` lists."""
    if store.local_root is None:
        con.register_filesystem(store.fs)
    for table in ALL_TABLES:
        parts = manifest.of(table.name)
        if parts:
            relation = con.read_parquet(
                [store.uri(p.path) for p in parts], hive_partitioning=True, union_by_name=True
            )
            relation.create_view(history_view(table), replace=True)
        else:  # registered, so the connection keeps the Arrow table alive
            con.register(
                history_view(table), with_partition(arrow_schema(table.name)).empty_table()
            )
    con.register("dicom_keywords", dicom_keywords())
    create_views(con)


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
