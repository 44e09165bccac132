"""The landing zone: one durable file per received object, never overwritten."""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from receiver.durable import TMP_SUFFIX, write_atomic

LANDED_SUFFIX = ".dcm"

RECEIVED_NAME = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{32}" + re.escape(LANDED_SUFFIX))
"""The names `LandingZone.store` gives: arrival time and a random UUID, nothing more."""


def is_received_name(name: str) -> bool:
    """True for a name our receiver gave; any other was chosen by whoever dropped the
    file into landing, and may name the patient."""
    return RECEIVED_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class LandingZone:
    """A folder where complete received instances wait for the autoloader.

    A name ending in ``.dcm`` means complete and durable; temporary files are
    dot-named and end in ``.partial`` so listing never sees them.
    """

    root: Path

    def store(self, data: bytes | memoryview) -> Path:
        """Write one received object durably under a new unique name and return it."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = self.root / f"{stamp}-{uuid.uuid4().hex}{LANDED_SUFFIX}"
        return write_atomic(final, data, overwrite=False)

    def completed(self) -> list[Path]:
        """Landed files ready for autoload, oldest first (names sort by arrival time)."""
        if not self.root.is_dir():
            return []
        names = [
            entry.name
            for entry in os.scandir(self.root)
            if entry.is_file()
            and entry.name.endswith(LANDED_SUFFIX)
            and not entry.name.startswith(".")
        ]
        return [self.root / name for name in sorted(names)]

    def remove_stale_partials(self, older_than_seconds: float = 3600.0) -> int:
        """Delete temporary files left by a crashed writer; none of them was acknowledged."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in os.scandir(self.root):
            if entry.name.endswith(TMP_SUFFIX) and entry.stat().st_mtime < cutoff:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed
