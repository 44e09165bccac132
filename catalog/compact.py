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
import os
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from catalog.schema import PARTITION_COLUMN, TABLE_BY_NAME
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
    groups: dict[tuple[str, str], list[Part]] = defaultdict(list)
    for part in manifest.parts:
        groups[(part.table, part.ingest_date)].append(part)
    return {k: v for k, v in groups.items() if len(v) >= min_parts}


def _merge(store: CatalogStore, table: str, day: str, parts: list[Part], scratch: Path) -> Part:
    """Write the rows of `parts` as one sorted part of the same partition (not yet listed)."""
    spec = TABLE_BY_NAME[table]
    name = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.parquet"
    relpath = f"{table}/{PARTITION_COLUMN}={day}/{name}"
    if store.local_root is not None:
        final = store.local_root / relpath
        local = final.with_name(f".{name}.{uuid.uuid4().hex[:8]}.partial")
    else:
        local = scratch / name
    con = duckdb.connect(config={"temp_directory": str(scratch)})  # a sort may spill
    try:
        if store.local_root is None:
            con.register_filesystem(store.fs)
        relation = con.read_parquet(
            [store.uri(p.path) for p in parts], hive_partitioning=False, union_by_name=True
        ).select(*spec.names)
        if spec.sort:
            relation = relation.order(", ".join(f"{c} NULLS LAST" for c in spec.sort))
        relation.write_parquet(str(local), compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
    finally:
        con.close()
    rows = pq.ParquetFile(local).metadata.num_rows
    expected = sum(p.rows for p in parts)
    if rows != expected:
        local.unlink(missing_ok=True)
        raise CatalogError(f"compaction of {table}/{day} wrote {rows} rows of {expected}")
    size = local.stat().st_size
    if store.local_root is not None:
        with local.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(local, final)
        fsync_dir(final.parent)
    else:
        store.fs.put_file(str(local), store.path(relpath))
        local.unlink()
    return Part(table, relpath, rows, size)


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
        replacements: list[tuple[list[Part], Part]] = []
        groups = sorted(_groups(manifest, min_parts).items())
        for (table, day), parts in groups:
            replacements.append((parts, _merge(store, table, day, parts, Path(tmp))))
            result.partitions[f"{table}/{PARTITION_COLUMN}={day}"] = len(parts)
            if on_merged is not None:
                on_merged(len(replacements), len(groups))

        def swap(latest: Manifest) -> None:
            now = datetime.now(UTC)
            gone = set(doomed)
            latest.retired = [r for r in latest.retired if r.path not in gone]
            present = {p.path for p in latest.parts}
            for inputs, output in replacements:
                if not all(p.path in present for p in inputs):
                    raise CatalogError("the catalog changed under compaction; run it again")
                merged = {p.path for p in inputs}
                latest.parts = [p for p in latest.parts if p.path not in merged] + [output]
                latest.retired.extend(Retired(p.path, now) for p in inputs)

        if doomed or replacements:
            store.commit(swap)
        result.merged = sum(len(inputs) for inputs, _ in replacements)
        result.written = len(replacements)
    result.seconds = round(time.perf_counter() - started, 3)
    return result
