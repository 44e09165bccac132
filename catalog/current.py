"""Which parts a current view reads as they are, and which it joins against `superseded`.

A current view is its history without the superseded versions. Joining every row
against `superseded` means reading every key, which costs more than most queries
themselves (about 80 ms for a million instance UIDs). Compaction therefore sorts
each partition into a part of current rows (`Part.current_as_of`: none of its rows
is superseded by a `superseded` part of that generation or earlier) and a part of
superseded rows (`Part.replaced`). A current view then reads

- the current parts as they are, unless a later `superseded` part names a row of their
  table and partition (or of their table, for rows written before partitions were named);
- the other parts (written since the last compaction, or from a catalog older than
  this scheme) joined against `superseded`, as before;
- nothing of the replaced parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from catalog.schema import ALL_TABLES
from catalog.store import CatalogStore, Manifest, Part


@dataclass(frozen=True)
class CurrentParts:
    """How one table's current view reads its parts."""

    clean: list[Part]
    """Rows all current: read as they are."""
    check: list[Part]
    """Joined against `superseded`."""


def tables_named(
    con: duckdb.DuckDBPyConnection, store: CatalogStore, parts: list[Part]
) -> dict[str, set[tuple[str, str | None]]]:
    """What each of `parts` (of `superseded`) names: path -> (table, partition of the
    replaced rows, None where unknown)."""
    if not parts:
        return {}
    path_of = {store.uri(p.path): p.path for p in parts}
    relation = con.read_parquet(list(path_of), filename=True, union_by_name=True)
    if "replaced_ingest_date" not in relation.columns:  # written before it was recorded
        relation = relation.select("*, CAST(NULL AS DATE) AS replaced_ingest_date")
    named: dict[str, set[tuple[str, str | None]]] = {p.path: set() for p in parts}
    for filename, table, day in (
        relation.select("filename, table_name, replaced_ingest_date").distinct().fetchall()
    ):
        named[path_of[str(filename)]].add((str(table), None if day is None else str(day)))
    return named


def current_parts(
    con: duckdb.DuckDBPyConnection, store: CatalogStore, manifest: Manifest
) -> dict[str, CurrentParts]:
    """For each versioned table, the parts its current view reads, and how."""
    superseded = manifest.of("superseded")
    versioned = [t.name for t in ALL_TABLES if t.versioned]
    parts = [p for name in versioned for p in manifest.of(name) if not p.replaced]
    checked = [p.current_as_of for p in parts if p.current_as_of is not None]
    since = min(checked, default=None)
    # Superseded parts that may name rows of a current part: published after its check.
    # Without unchecked parts, only they are read (one small part per batch since the
    # last compaction); otherwise all, to tell which tables ever had a row superseded.
    if any(p.current_as_of is None for p in parts):
        named = tables_named(con, store, superseded)
    else:
        named = tables_named(con, store, [p for p in superseded if p.generation > (since or 0)])
    ever = {table for entries in named.values() for table, _ in entries}
    generation = {p.path: p.generation for p in superseded}
    plans = {}
    for name in versioned:
        clean: list[Part] = []
        check: list[Part] = []
        for part in manifest.of(name):
            if part.replaced:
                continue
            if part.current_as_of is None:
                (check if name in ever else clean).append(part)
                continue
            checked_at, day = part.current_as_of, part.ingest_date
            newer = any(
                generation[path] > checked_at and bool({(name, day), (name, None)} & entries)
                for path, entries in named.items()
            )
            (check if newer else clean).append(part)
        plans[name] = CurrentParts(clean, check)
    return plans
