"""Reading the receiver's receipts log: each line once, across log rotation.

The receiver appends one JSON line per answered C-STORE to
``<data_dir>/logs/receipts.jsonl``. A log is known by a hash of its first line,
not by its name, so a log renamed by rotation (``receipts.jsonl.1``, or
``receipts.jsonl-20261204``), or copied then truncated, is still recognized and
read on from where reading stopped. What was consumed of each log is remembered
in the catalog's manifest, published together with the rows read, so a crash
can neither lose nor repeat a line. Compressed rotations (``.gz`` ...) are not
read: rotate with ``delaycompress`` so a log is read before it is compressed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from tasks.extract import text

LOGGER = logging.getLogger("dicomflow.catalog.receipts")
"""Not under ``dicomflow.receipts``: that logger's handler writes the receipts log itself."""

LOG_NAME = "receipts.jsonl"
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")
FIRST_LINE_MAX = 65536
CHUNK_BYTES = 32 * 1024 * 1024
"""Read at most this much of a log per chunk, so a large backlog is taken in parts."""


@dataclass(frozen=True)
class Chunk:
    """Rows read from one log, and the offset reading reached in it."""

    source: str
    end: int
    rows: list[dict[str, Any]]


def log_files(logs_dir: Path) -> list[Path]:
    """The receipts log and its rotated copies that are plain text."""
    if not logs_dir.is_dir():
        return []
    found = [
        p
        for p in logs_dir.iterdir()
        if p.is_file()
        and (
            p.name == LOG_NAME
            or p.name.startswith(f"{LOG_NAME}.")
            or p.name.startswith(f"{LOG_NAME}-")
        )
        and not p.name.endswith(COMPRESSED)
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def fingerprint(path: Path) -> str | None:
    """What identifies a log whatever its name: a hash of its first complete line."""
    with path.open("rb") as fh:
        head = fh.read(FIRST_LINE_MAX)
    end = head.find(b"\n")
    if end < 0:
        return None  # not one complete line yet
    return hashlib.sha256(head[: end + 1]).hexdigest()[:32]


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    return text(value) if value not in (None, "") else None


def receipt_row(
    record: Mapping[str, Any], source: str, offset: int, map_uid: Callable[[str], str | None]
) -> dict[str, Any]:
    """One receipts-table row from one log line; the original SOP Instance UID is mapped."""
    status = _str(record.get("status"))
    landing = record.get("landing_path")
    original = str(record.get("sop_instance") or "").strip("\x00 ")
    ms = record.get("ms")
    return {
        "receipt_time": _time(record.get("time")),
        "association_id": _str(record.get("association_id")),
        "calling_ae_title": _str(record.get("calling_ae")),
        "called_ae_title": _str(record.get("called_ae")),
        "peer": _str(record.get("peer")),
        "sop_class_uid": _str(record.get("sop_class")),
        "sop_instance_uid": map_uid(original) if original else None,
        "transfer_syntax_uid": _str(record.get("transfer_syntax")),
        "bytes": _int(record.get("bytes")),
        "status": status,
        "success": _is_hex(status) and int(status or "", 16) == 0,
        "landed_name": text(PurePath(str(landing)).name) if landing else None,
        "move_originator_ae_title": _str(record.get("move_originator_ae")),
        "move_originator_message_id": _int(record.get("move_originator_message_id")),
        "job_id": _str(record.get("job_id")),
        "ms": float(ms) if isinstance(ms, int | float) else None,
        "source_file": source,
        "source_offset": offset,
    }


def _is_hex(value: str | None) -> bool:
    try:
        int(value or "", 16)
    except ValueError:
        return False
    return True


def _lines(data: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    """Each complete line of `data` with its offset in the log."""
    position = 0
    while True:
        end = data.find(b"\n", position)
        if end < 0:
            return
        yield start + position, data[position:end]
        position = end + 1


def read_new(
    logs_dir: Path,
    offsets: Mapping[str, int],
    map_uid: Callable[[str], str | None],
    max_bytes: int = CHUNK_BYTES,
) -> Iterator[Chunk]:
    """Chunks of receipts not read yet, log by log, oldest log first.

    Only complete lines are read: the receiver may be writing the last one now.
    A line that is not JSON (a receiver killed mid-write) is skipped and logged.
    """
    for path in log_files(logs_dir):
        try:
            source = fingerprint(path)
            if source is None:
                continue
            offset = offsets.get(source, 0)
            if path.stat().st_size <= offset:
                continue
            with path.open("rb") as fh:
                while True:
                    fh.seek(offset)
                    data = fh.read(max_bytes)
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        break
                    rows = []
                    for at, line in _lines(data[: cut + 1], offset):
                        try:
                            record = json.loads(line)
                        except ValueError:
                            LOGGER.warning("skipped a damaged line at byte %d of %s", at, path.name)
                            continue
                        if isinstance(record, dict):
                            rows.append(receipt_row(record, source, at, map_uid))
                    offset += cut + 1
                    yield Chunk(source, offset, rows)
        except FileNotFoundError:  # rotated away while we looked: its copy is read instead
            continue
