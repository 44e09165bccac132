"""Which retrieval job asked for the C-STOREs that arrive: a ledger of our open C-MOVEs.

A C-STORE sent as a sub-operation of a C-MOVE carries the Move Originator AE title
and the Message ID of that C-MOVE (PS3.7 9.1.1.1). Before each C-MOVE we take a
free Message ID here and write down the job it serves; the receiver, perhaps in
another process, looks the pair up and puts the job id in its receipt.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from receiver.durable import write_atomic

MAX_MESSAGE_ID = 0xFFFF
STALE_SECONDS = 7 * 86400.0
"""An entry this old belongs to a C-MOVE that can no longer be running."""


class LedgerFull(RuntimeError):
    """Every Message ID is taken by an open C-MOVE (65,535 of them)."""


@dataclass(frozen=True)
class MoveLedger:
    """One small file per open C-MOVE: ``<folder>/<message id>.json``."""

    folder: Path

    def _entry(self, message_id: int) -> Path:
        return self.folder / f"{message_id}.json"

    def open(self, calling_ae: str, job_id: str) -> int:
        """Take a free Message ID for a C-MOVE by `calling_ae` for `job_id`."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        record = json.dumps({"calling_ae": calling_ae, "job_id": job_id, "opened": time.time()})
        for _ in range(64):
            message_id = random.randint(1, MAX_MESSAGE_ID)
            entry = self._entry(message_id)
            if entry.exists() and time.time() - entry.stat().st_mtime > STALE_SECONDS:
                entry.unlink(missing_ok=True)
            try:
                write_atomic(entry, record.encode(), overwrite=False)
            except FileExistsError:
                continue
            return message_id
        raise LedgerFull("no free C-MOVE Message ID: too many open C-MOVEs in the ledger")

    def close(self, message_id: int) -> None:
        self._entry(message_id).unlink(missing_ok=True)

    @contextmanager
    def opened(self, calling_ae: str, job_id: str) -> Iterator[int]:
        """A Message ID for the life of one C-MOVE."""
        message_id = self.open(calling_ae, job_id)
        try:
            yield message_id
        finally:
            self.close(message_id)

    def job_for(self, originator_ae: str | None, message_id: int | None) -> str | None:
        """The job of an open C-MOVE by `originator_ae` with `message_id`, if we made it."""
        if not originator_ae or message_id is None or not 0 < message_id <= MAX_MESSAGE_ID:
            return None
        try:
            record = json.loads(self._entry(message_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if record.get("calling_ae") != originator_ae.strip():
            return None
        job = record.get("job_id")
        return str(job) if job else None


def ledger_dir(data_dir: Path) -> Path:
    """Where the ledger lives under a data root (shared by receiver and retrieve)."""
    return data_dir / "retrieve" / "moves"
