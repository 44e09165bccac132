"""Crash-safe file writes: write to a temporary name, fsync, rename, fsync the folder.

Every file another step may trust (a landed instance, an archived instance, a
catalog part) is made visible under its final name only once its bytes are on disk.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".partial"
"""Suffix of files still being written; readers ignore them."""


PRIVATE_UMASK = 0o027
"""Files we create are readable by owner and group at most; others get nothing."""


def restrict_new_files() -> None:
    """Give every file and folder this process creates from now on no world access.

    Landed and archived instances, the catalog and the logs may hold patient data
    (landing and quarantine before anonymization); a permissive umask must not leak it.
    """
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(final: Path) -> Path:
    """A unique temporary name beside `final` (same filesystem, so rename is atomic)."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")


SYNCFS_FROM = 32
"""A batch of at least this many files is made durable with one syncfs(2) per filesystem
instead of an fsync per file and folder: on ext4 or XFS each fsync waits for a journal
commit of its own, syncfs for one."""


def _libc_syncfs() -> Callable[[int], int] | None:
    """syncfs(2), where it reports write-back errors (Linux 5.8 and later); else None."""
    release = platform.release().split(".")
    try:
        if sys.platform != "linux" or (int(release[0]), int(release[1])) < (5, 8):
            return None
        syncfs: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, IndexError, OSError, ValueError):
        return None
    return syncfs


def syncfs(folder: Path) -> bool:
    """Flush the whole filesystem holding `folder` (data and metadata); False where
    syncfs(2) is not to be trusted, so the caller fsyncs file by file."""
    call = _libc_syncfs()
    if call is None:
        return False
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if call(fd) != 0:
            number = ctypes.get_errno()
            raise OSError(number, f"syncfs {folder}: {os.strerror(number)}")
    finally:
        os.close(fd)
    return True


class PendingSync:
    """Files renamed into place without an fsync, made durable together by `flush`.

    fsync costs a disk round trip; a batch of hundreds of files pays once at its end
    (one syncfs per filesystem, or an fsync per file and one per folder) instead of
    twice per file as it goes. Until `flush` returns, nothing outside the batch may
    name these files: the caller writes what does (catalog rows) afterwards.
    """

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.folders: set[Path] = set()

    def add(self, path: Path) -> None:
        self.files.append(path)
        self.folders.add(path.parent)

    def flush(self) -> None:
        """Make every file added durable, and its name in its folder."""
        if len(self.files) < SYNCFS_FROM or not self._flush_filesystems():
            self._fsync_each()
        self.files.clear()
        self.folders.clear()

    def _fsync_each(self) -> None:
        for path in self.files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for folder in sorted(self.folders):
            fsync_dir(folder)

    def _flush_filesystems(self) -> bool:
        """One syncfs per filesystem the folders are on; False if syncfs is unusable."""
        by_device: dict[int, Path] = {}
        for folder in self.folders:
            by_device.setdefault(os.stat(folder).st_dev, folder)
        return all(syncfs(folder) for folder in by_device.values())


def write_atomic(
    final: Path,
    data: bytes | memoryview,
    *,
    overwrite: bool = True,
    pending: PendingSync | None = None,
) -> Path:
    """Write `data` to `final` durably; with ``overwrite=False`` an existing file wins.

    Raises FileExistsError when `overwrite` is false and `final` exists; the
    temporary file is removed on every failure so no partial file survives.
    """
    return write_atomic_with(final, lambda fh: fh.write(data), overwrite=overwrite, pending=pending)


def write_atomic_with(
    final: Path,
    writer: Callable[[BinaryIO], object],
    *,
    overwrite: bool = True,
    pending: PendingSync | None = None,
) -> Path:
    """Like `write_atomic`, for writers that stream into an open binary file.

    With `pending`, the file is renamed into place unsynced and added there instead.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        with open(tmp, "xb") as fh:
            writer(fh)
            if pending is None:
                fh.flush()
                os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, final)
        else:
            # link() refuses to replace an existing name, unlike rename()
            os.link(tmp, final)
            os.unlink(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if pending is None:
        fsync_dir(final.parent)
    else:
        pending.add(final)
    return final


def remove_durably(paths: list[Path]) -> None:
    """Unlink `paths` (missing ones are fine) and fsync each parent folder once."""
    parents: set[Path] = set()
    for path in paths:
        path.unlink(missing_ok=True)
        parents.add(path.parent)
    for parent in parents:
        fsync_dir(parent)


def sweep_partials(root: Path) -> int:
    """Delete every temporary file under `root`; only for when no writer can be running.

    A writer killed between creating its temporary file and renaming it leaves the
    file behind. It was never visible under a final name, so deleting it loses nothing.
    """
    if not root.is_dir():
        return 0
    removed = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                (Path(dirpath) / name).unlink(missing_ok=True)
                removed += 1
    return removed
