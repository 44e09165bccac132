"""Compaction: many small parts of a partition become one sorted part, readers unaffected.

Each autoload batch adds a small part per table; DuckDB pays per file it opens.
Compaction merges the parts of each (table, ingest date) partition into one,
sorted by the table's sort columns and cut into row groups of DuckDB's size,
then swaps the manifest. The merged-away parts leave the manifest at once and
the disk only after a grace period, so a reader that listed them a moment
before keeps reading them. Rows are copied as they are: history is untouched.
"""

from __future__ import annotations

import fcntl
import functools
import os
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog.current import tables_named
from catalog.promoted import json_sql
from catalog.schema import (
    ALL_TABLES,
    PARTITION_COLUMN,
    TABLE_BY_NAME,
    Table,
    duckdb_type,
    layout,
)
from catalog.store import (
    COMPRESSION,
    ROW_GROUP_ROWS,
    CatalogError,
    CatalogStore,
    Manifest,
    Part,
    Retired,
)
from receiver.durable import fsync_dir, sweep_partials

DEFAULT_KEEP_SECONDS = 86400.0
ORPHAN_AGE_SECONDS = 3600.0
"""An unlisted part younger than this may be one a running writer is about to publish."""


class CompactionBusy(CatalogError):
    """Another compaction of this catalog is running."""


@dataclass
class CompactionResult:
    """What one compaction did."""

    merged: int = 0
    """Parts merged away."""
    written: int = 0
    """Parts written in their place."""
    deleted: int = 0
    """Files removed from disk: parts replaced longer ago than the grace period, orphans."""
    partitions: dict[str, int] = field(default_factory=dict)
    """``table/ingest_date=...`` -> parts merged there."""
    seconds: float = 0.0


@contextmanager
def _compaction_lock(store: CatalogStore) -> Iterator[None]:
    path = store.lock_path.with_name(store.lock_path.name + ".compact")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CompactionBusy(f"a compaction of {store.location} is running") from None
        yield
    finally:
        os.close(fd)


def sweep_temporary(store: CatalogStore) -> int:
    """Delete the temporary files writers killed mid-write left in a local catalog.

    Only for a caller that keeps autoload out (it holds the autoload lock), and never
    while a compaction runs: its merged part is a temporary file until renamed.
    """
    if store.local_root is None:
        return 0
    try:
        with _compaction_lock(store):
            return sweep_partials(store.local_root)
    except CompactionBusy:
        return 0


def _groups(manifest: Manifest, min_parts: int) -> dict[tuple[str, str], list[Part]]:
    """Partitions of append-only tables with `min_parts` parts or more."""
    groups: dict[tuple[str, str], list[Part]] = defaultdict(list)
    for part in manifest.parts:
        if not TABLE_BY_NAME[part.table].versioned:
            groups[(part.table, part.ingest_date)].append(part)
    return {k: v for k, v in groups.items() if len(v) >= min_parts}


def _stale_days(
    con: duckdb.DuckDBPyConnection, store: CatalogStore, manifest: Manifest, table: Table
) -> set[str]:
    """Partitions of `table` with a current part that a later `superseded` part names."""
    clean = [p for p in manifest.of(table.name) if p.current_as_of is not None]
    since = min((p.current_as_of for p in clean if p.current_as_of is not None), default=None)
    if since is None:
        return set()
    later = [p for p in manifest.of("superseded") if p.generation > since]
    named = tables_named(con, store, later)
    later = [p for p in later if any(t == table.name for t, _ in named[p.path])]
    if not later:
        return set()
    rows = con.read_parquet([store.uri(p.path) for p in clean], hive_partitioning=True)
    gone = con.read_parquet([store.uri(p.path) for p in later]).filter(
        f"table_name = '{table.name}'"
    )
    hit = rows.set_alias("h").join(
        gone.set_alias("s"), f"h.{table.key} = s.key AND h.version = s.version", how="semi"
    )
    return {str(day) for (day,) in hit.select(PARTITION_COLUMN).distinct().fetchall()}


def _versioned_groups(store: CatalogStore, manifest: Manifest) -> dict[tuple[str, str], list[Part]]:
    """Partitions of versioned tables to rewrite: parts not yet sorted into current and
    replaced rows, more than one of either, current rows a later batch superseded, or
    parts lacking columns the schema has gained."""
    groups: dict[tuple[str, str], list[Part]] = defaultdict(list)
    for part in manifest.parts:
        if TABLE_BY_NAME[part.table].versioned:
            groups[(part.table, part.ingest_date)].append(part)
    con = duckdb.connect()
    try:
        if store.local_root is None:
            con.register_filesystem(store.fs)
        stale = {
            (t.name, day)
            for t in ALL_TABLES
            if t.versioned
            for day in _stale_days(con, store, manifest, t)
        }
    finally:
        con.close()
    wanted = {}
    for (table, day), parts in groups.items():
        clean = [p for p in parts if p.current_as_of is not None]
        replaced = [p for p in parts if p.replaced]
        if (
            len(clean) + len(replaced) < len(parts)
            or len(clean) > 1
            or len(replaced) > 1
            or (table, day) in stale
            or any(p.layout != layout(table) for p in parts)
        ):
            wanted[(table, day)] = parts
    return wanted


def _inputs(
    con: duckdb.DuckDBPyConnection, store: CatalogStore, spec: Table, parts: list[Part]
) -> duckdb.DuckDBPyRelation:
    """The rows of `parts` with the table's columns, in its order.

    A part written before a column existed lacks it: a column from a DICOM keyword is
    filled from the part's dicom_json, as ingest would have filled it; others are NULL.
    """
    by_columns: dict[frozenset[str], list[Part]] = defaultdict(list)
    for part in parts:
        by_columns[frozenset(store.columns(part.path))].append(part)
    relations = []
    for have, group in by_columns.items():
        select = []
        for column in spec.columns:
            if column.name in have:
                select.append(f'"{column.name}"')
            elif column.keyword and "dicom_json" in have:
                select.append(f'{json_sql(column.keyword, column.type)} AS "{column.name}"')
            else:
                select.append(f'CAST(NULL AS {duckdb_type(column.type)}) AS "{column.name}"')
        relation = con.read_parquet(
            [store.uri(p.path) for p in group], hive_partitioning=False, union_by_name=True
        )
        relations.append(relation.select(", ".join(select)))
    return functools.reduce(lambda a, b: a.union(b), relations)


def _superseded_keys(store: CatalogStore, manifest: Manifest) -> dict[str, pa.Table]:
    """Table name -> the (key, version) pairs `superseded` names in `manifest`."""
    parts = manifest.of("superseded")
    if not parts:
        return {}
    con = duckdb.connect()
    try:
        if store.local_root is None:
            con.register_filesystem(store.fs)
        rows = con.read_parquet([store.uri(p.path) for p in parts])
        every = rows.select("table_name, key, version").to_arrow_table()
    finally:
        con.close()
    return {
        str(name): every.filter(pc.equal(every["table_name"], name)).select(["key", "version"])
        for name in pc.unique(every["table_name"]).to_pylist()
    }


def _merge(
    store: CatalogStore,
    table: str,
    day: str,
    parts: list[Part],
    scratch: Path,
    read: Manifest,
    gone: pa.Table | None,
) -> list[Part]:
    """Write the rows of `parts` as sorted parts of the same partition (not yet listed).

    A versioned table gets a part of the rows current as of `read` (the manifest the
    compaction read) and a part of the rows `gone` names (superseded); either may be
    empty.
    """
    spec = TABLE_BY_NAME[table]
    con = duckdb.connect(config={"temp_directory": str(scratch)})  # a sort may spill
    try:
        if store.local_root is None:
            con.register_filesystem(store.fs)
        _inputs(con, store, spec, parts).to_table("merged")
        merged = con.table("merged")
        outputs: list[tuple[duckdb.DuckDBPyRelation, dict[str, Any]]] = [(merged, {})]
        if spec.versioned:
            outputs = [(merged, {"current_as_of": read.generation})]
        if spec.versioned and gone is not None:
            con.register("gone", gone)
            on = f"m.{spec.key} = g.key AND m.version = g.version"
            rows, keys = merged.set_alias("m"), con.table("gone").set_alias("g")
            outputs = [
                (rows.join(keys, on, how="anti"), {"current_as_of": read.generation}),
                (rows.join(keys, on, how="semi"), {"replaced": True}),
            ]
        outcome = [
            _write(
                store, con, relation, table, day, scratch, flags | {"generation": read.generation}
            )
            for relation, flags in outputs
        ]
    finally:
        con.close()
    written = [p for p in outcome if p is not None]
    got, expected = sum(p.rows for p in written), sum(p.rows for p in parts)
    if got != expected:
        for part in written:
            store.delete(part.path)
        raise CatalogError(f"compaction of {table}/{day} wrote {got} rows of {expected}")
    return written


def _write(
    store: CatalogStore,
    con: duckdb.DuckDBPyConnection,
    relation: duckdb.DuckDBPyRelation,
    table: str,
    day: str,
    scratch: Path,
    flags: dict[str, Any],
) -> Part | None:
    """Write `relation`, sorted, as a part of the partition; None when it has no rows."""
    spec = TABLE_BY_NAME[table]
    name = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.parquet"
    relpath = f"{table}/{PARTITION_COLUMN}={day}/{name}"
    if store.local_root is not None:
        final = store.local_root / relpath
        final.parent.mkdir(parents=True, exist_ok=True)
        local = final.with_name(f".{name}.{uuid.uuid4().hex[:8]}.partial")
    else:
        local = scratch / name
    if spec.sort:
        relation = relation.order(", ".join(f"{c} NULLS LAST" for c in spec.sort))
    relation.write_parquet(str(local), compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
    rows = pq.ParquetFile(local).metadata.num_rows
    if not rows:
        local.unlink()
        return None
    size = local.stat().st_size
    if store.local_root is not None:
        with local.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(local, final)
        fsync_dir(final.parent)
    else:
        store.fs.put_file(str(local), store.path(relpath))
        local.unlink()
    return Part(table, relpath, rows, size, layout=layout(table), **flags)


def _expired(store: CatalogStore, manifest: Manifest, keep: timedelta, now: datetime) -> list[str]:
    """Files to delete: parts replaced before the grace period, and parts no manifest lists
    (a writer that died before publishing them) older than it and than an hour."""
    listed = {p.path for p in manifest.parts}
    retired = {r.path for r in manifest.retired}
    old = [r.path for r in manifest.retired if now - r.retired_at > keep]
    cutoff = (now - max(keep, timedelta(seconds=ORPHAN_AGE_SECONDS))).timestamp()
    orphans = [
        path
        for path, mtime in store.part_files().items()
        if path not in listed and path not in retired and mtime < cutoff
    ]
    return old + orphans


def compact(
    store: CatalogStore,
    keep_replaced_seconds: float = DEFAULT_KEEP_SECONDS,
    min_parts: int = 2,
    on_merged: Callable[[int, int], None] | None = None,
) -> CompactionResult:
    """Merge each partition's parts into one; delete what readers can no longer need.

    Safe while autoload writes (new parts published meanwhile are kept) and while
    readers query. Raises `CompactionBusy` if another compaction runs. `on_merged`
    gets (partitions merged, partitions to merge) after each, for a progress bar.
    """
    started = time.perf_counter()
    result = CompactionResult()
    keep = timedelta(seconds=keep_replaced_seconds)
    with _compaction_lock(store), tempfile.TemporaryDirectory(prefix="dicomflow-compact-") as tmp:
        manifest = store.read_manifest()
        doomed = _expired(store, manifest, keep, datetime.now(UTC))
        for path in doomed:
            store.delete(path)
        result.deleted = len(doomed)
        groups = _groups(manifest, min_parts) | _versioned_groups(store, manifest)
        keys = _superseded_keys(store, manifest) if groups else {}
        replacements: list[tuple[list[Part], list[Part]]] = []
        ordered = sorted(groups.items())
        for (table, day), parts in ordered:
            merged = _merge(store, table, day, parts, Path(tmp), manifest, keys.get(table))
            replacements.append((parts, merged))
            result.partitions[f"{table}/{PARTITION_COLUMN}={day}"] = len(parts)
            if on_merged is not None:
                on_merged(len(replacements), len(ordered))
        rewritten = {p.path for parts, _ in replacements for p in parts}
        newest = max((p.generation for p in manifest.of("superseded")), default=0)
        # Current parts left as they are: checked against the superseded parts since.
        checked = {
            p.path
            for p in manifest.parts
            if p.current_as_of is not None and p.current_as_of < newest and p.path not in rewritten
        }

        def swap(latest: Manifest) -> None:
            now = datetime.now(UTC)
            gone = set(doomed)
            latest.retired = [r for r in latest.retired if r.path not in gone]
            present = {p.path for p in latest.parts}
            for inputs, outputs in replacements:
                if not all(p.path in present for p in inputs):
                    raise CatalogError("the catalog changed under compaction; run it again")
                merged = {p.path for p in inputs}
                latest.parts = [p for p in latest.parts if p.path not in merged] + outputs
                latest.retired.extend(Retired(p.path, now) for p in inputs)
            latest.parts = [
                replace(p, current_as_of=manifest.generation) if p.path in checked else p
                for p in latest.parts
            ]

        if doomed or replacements or checked:
            store.commit(swap)
        result.merged = sum(len(inputs) for inputs, _ in replacements)
        result.written = sum(len(outputs) for _, outputs in replacements)
    result.seconds = round(time.perf_counter() - started, 3)
    return result
