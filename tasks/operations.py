"""The operational tables: receipts and quarantine, brought into the catalog.

Both run once per autoload run (not per batch) and are idempotent: receipts
remember how far each log was read, in the same manifest swap as the rows; the
quarantine table is made to mirror the quarantine folder, whatever moved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from catalog.query import attach
from catalog.store import CatalogStore
from tasks.anonymize import archived_uids
from tasks.ingest import IngestContext, StorageUnavailable, landed_name
from tasks.policy import Policy
from tasks.pseudonyms import Pseudonymizer
from tasks.quarantine import Entry, entries
from tasks.receipts import read_new


def uid_mapper(policy: Policy, keys: Pseudonymizer) -> Callable[[str], str | None]:
    """Original SOP Instance UID -> the one the archive uses, remembered per call site."""
    seen: dict[str, str | None] = {}

    def mapped(original: str) -> str | None:
        if original not in seen:
            seen[original] = archived_uids(policy, keys, {"SOPInstanceUID": original}).get(
                "SOPInstanceUID"
            )
        return seen[original]

    return mapped


def record_receipts(
    store: CatalogStore,
    logs_dir: Path,
    map_uid: Callable[[str], str | None],
    run_id: str,
) -> int:
    """Append the receipts not read yet; returns how many rows were added."""
    offsets = dict(store.read_manifest().receipt_offsets)
    added = 0
    for chunk in read_new(logs_dir, offsets, map_uid):
        now = datetime.now(UTC)
        for row in chunk.rows:
            row.update(run_id=run_id, recorded_at=now)
        store.append({"receipts": chunk.rows}, receipt_offsets={chunk.source: chunk.end})
        offsets[chunk.source] = chunk.end
        added += len(chunk.rows)
    return added


def _current_quarantine(store: CatalogStore) -> dict[str, dict[str, Any]]:
    manifest = store.read_manifest()
    if not manifest.of("quarantine"):  # never anything quarantined: no need to open DuckDB
        return {}
    con = duckdb.connect()
    try:
        attach(con, store, manifest)
        cursor = con.execute(
            "SELECT quarantine_name, version, event, quarantined_at, created_at, reason,"
            " landed_name, file_size FROM quarantine_current"
        )
        names = [d[0] for d in cursor.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}
    finally:
        con.close()


def catalog_name(stem: str, keys: Pseudonymizer) -> str:
    """A quarantine name as the catalog records it: one our receiver gave as it is, any
    other (a file dropped into landing by hand may be named after the patient) as a
    keyed hash, like `instances.landed_name`."""
    return landed_name(f"{stem}.dcm", keys).removesuffix(".dcm")


def catalog_detail(reason: str, detail: str) -> str:
    """What the catalog keeps of a reason's detail. Ours name elements, never values; an
    unexpected error's message may quote a value, so only its type is kept."""
    if reason == "processing-error":
        kind = detail.split(":", 1)[0].strip()
        return f"{kind} (the message is in the quarantine reason file)"
    return detail[:2000]


def quarantine_changes(
    present: list[Entry],
    current: Mapping[str, Mapping[str, Any]],
    run_id: str,
    now: datetime,
    keys: Pseudonymizer,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows that make the table match the folder: (quarantine rows, superseded rows)."""
    rows: list[dict[str, Any]] = []
    superseded: list[dict[str, Any]] = []

    def add(name: str, event: str, fields: dict[str, Any]) -> None:
        before = current.get(name)
        rows.append(
            fields
            | {
                "quarantine_name": name,
                "event": event,
                "version": before["version"] + 1 if before else 1,
                "created_at": before["created_at"] if before else now,
                "run_id": run_id,
                "recorded_at": now,
            }
        )
        if before:
            superseded.append(
                {
                    "table_name": "quarantine",
                    "key": name,
                    "version": before["version"],
                    "run_id": run_id,
                    "recorded_at": now,
                }
            )

    files = {catalog_name(e.name, keys): e for e in present if e.size is not None}
    for name, entry in files.items():
        before = current.get(name)
        if before and before["event"] == "quarantined" and before["quarantined_at"] == entry.time:
            continue
        add(
            name,
            "quarantined",
            {
                "reason": entry.reason,
                "detail": catalog_detail(entry.reason, entry.detail),
                "quarantined_at": entry.time,
                "landed_name": landed_name(entry.landed_name, keys) if entry.landed_name else None,
                "file_size": entry.size,
            },
        )
    for name, before in current.items():
        if before["event"] == "quarantined" and name not in files:
            add(
                name,
                "released",
                {
                    "reason": before["reason"],
                    "detail": "no longer in quarantine (retried or removed)",
                    "quarantined_at": before["quarantined_at"],
                    "landed_name": before["landed_name"],
                    "file_size": before["file_size"],
                },
            )
    return rows, superseded


def record_quarantine(
    store: CatalogStore, quarantine_dir: Path, run_id: str, keys: Pseudonymizer
) -> int:
    """Make the quarantine table match the folder; returns how many rows were added."""
    rows, superseded = quarantine_changes(
        entries(quarantine_dir), _current_quarantine(store), run_id, datetime.now(UTC), keys
    )
    if rows:
        store.append({"quarantine": rows, "superseded": superseded})
    return len(rows)


def ingest_receipts(ctx: IngestContext) -> int:
    """`record_receipts` for an autoload run: its keys, its catalog, its run id."""
    if ctx.logs_dir is None:
        return 0
    try:
        mapper = uid_mapper(ctx.policy(), ctx.keys())
        return record_receipts(ctx.store(), ctx.logs_dir, mapper, ctx.run_id)
    except OSError as exc:
        raise StorageUnavailable.during("receipts write", exc) from exc


def mirror_quarantine(ctx: IngestContext) -> int:
    """`record_quarantine` for an autoload run."""
    try:
        return record_quarantine(ctx.store(), ctx.quarantine_dir, ctx.run_id, ctx.keys())
    except OSError as exc:
        raise StorageUnavailable.during("quarantine table write", exc) from exc
