"""The landing zone: one durable file per received object, never overwritten."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from receiver.durable import TMP_SUFFIX, fsync_dir, write_atomic
from receiver.space import ensure_room

LANDED_SUFFIX = ".dcm"

RECEIVED_NAME = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{32}" + re.escape(LANDED_SUFFIX))
"""The names `LandingZone.store` and `.adopt` give: arrival time and a random UUID, nothing more."""


def is_received_name(name: str) -> bool:
    """True for a name our receiver gave; any other was chosen by whoever dropped the
    file into landing, and may name the patient."""
    return RECEIVED_NAME.fullmatch(name) is not None


class PartialFile:
    """A received object being written into the landing zone under a temporary name.

    pynetdicom writes an incoming C-STORE dataset into this in place of its own
    temporary file (`receiver.scp` arranges it), so even a huge instance never sits
    in memory and never crosses filesystems on its way to its final name. A failed
    write (a full disk) is kept in `error` rather than raised in pynetdicom's reader
    thread, where it would end the association: the rest of the dataset is still
    read, then dropped, and the C-STORE is answered with a failure status.

    With `keep_free`, the filesystem must keep that many bytes free: checked before
    the first byte, every `ROOM_CHECK` bytes and at the end; a check that fails is
    such an error (`receiver.space.NoRoom`), and the space is given back at once.
    """

    ROOM_CHECK = 4 * 2**20

    def __init__(self, path: Path, keep_free: int = 0) -> None:
        self.path = path
        self.name = str(path)  # pynetdicom reads the dataset back by this name
        self.keep_free = keep_free
        self.error: OSError | None = None
        self.size = 0
        self._unchecked = 0
        self._lock = threading.Lock()
        self._fh: BinaryIO | None = None
        try:
            ensure_room(path.parent, 0, keep_free)
            self._fh = open(path, "xb")  # noqa: SIM115 - closed by close() or discard()
        except OSError as exc:
            self.error = exc

    @property
    def file(self) -> PartialFile:
        """pynetdicom flushes through ``.file``, as on a NamedTemporaryFile."""
        return self

    def write(self, data: bytes) -> int:
        with self._lock:
            if self._fh is not None and self.error is None:
                try:
                    self._fh.write(data)
                    self.size += len(data)
                    self._unchecked += len(data)
                    if self._unchecked >= self.ROOM_CHECK:
                        self._unchecked = 0
                        self._fh.flush()
                        ensure_room(self.path.parent, 0, self.keep_free)
                except OSError as exc:
                    self._fail(exc)
        return len(data)

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None and self.error is None:
                try:
                    self._fh.flush()
                except OSError as exc:
                    self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """Keep the first error and give the space back at once."""
        self.error = exc
        self._close()
        self._unlink()

    def _unlink(self) -> None:
        # Best effort: a temporary file left behind is removed at the next start.
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError as exc:
                self.error = self.error or exc

    def close(self) -> None:
        with self._lock:
            self._close()

    def sync(self) -> None:
        """Flush and fsync the bytes written, then close; raises the first write error."""
        with self._lock:
            if self.error is None and self._fh is not None:
                try:
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                    ensure_room(self.path.parent, 0, self.keep_free)
                except OSError as exc:
                    self.error = exc
            self._close()
            if self.error is not None:
                raise self.error

    def discard(self) -> None:
        """Close and delete: the object was refused, or its association ended first."""
        with self._lock:
            self._close()
            self._unlink()


@dataclass(frozen=True)
class LandingZone:
    """A folder where complete received instances wait for the autoloader.

    A name ending in ``.dcm`` means complete and durable; temporary files are
    dot-named and end in ``.partial`` so listing never sees them.
    """

    root: Path

    def _new_name(self) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        return self.root / f"{stamp}-{uuid.uuid4().hex}{LANDED_SUFFIX}"

    def store(self, data: bytes | memoryview) -> Path:
        """Write one received object durably under a new unique name and return it."""
        self.root.mkdir(parents=True, exist_ok=True)
        return write_atomic(self._new_name(), data, overwrite=False)

    def open_partial(self, keep_free: int = 0) -> PartialFile:
        """A new temporary file in the landing zone for an object being received, on a
        filesystem that must keep `keep_free` bytes free."""
        return PartialFile(self.root / f".incoming-{uuid.uuid4().hex}{TMP_SUFFIX}", keep_free)

    def adopt(self, partial: PartialFile) -> Path:
        """Make a completely received `partial` a landed file: fsync, rename, fsync folder.

        Raises OSError (the first failed write, or this step's) and removes the
        temporary file; on success returns the landed file's path.
        """
        try:
            partial.sync()
            final = self._new_name()
            os.link(partial.path, final)  # unlike rename(), never replaces a file
        finally:
            partial.discard()  # the temporary name; the landed one stays
        fsync_dir(self.root)
        return final

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
