"""Free space checks: refuse what would fill a filesystem, before writing it."""

from __future__ import annotations

import shutil
from pathlib import Path


class NoRoom(OSError):
    """Writing would leave less free space than configured; nothing was written."""


def free_bytes(folder: Path) -> int:
    """Bytes available to us on the filesystem holding `folder` (or, while it does not
    exist yet, its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def ensure_room(folder: Path, nbytes: int, keep_free: int) -> None:
    """Raise NoRoom unless `nbytes` fit in `folder` with `keep_free` bytes to spare.

    A full disk can then never hold a truncated file that looks complete, and the
    operating system and the autoloader keep working space.
    """
    if keep_free <= 0:
        return
    free = free_bytes(folder)
    if free - nbytes < keep_free:
        raise NoRoom(
            f"landing filesystem has {free // 2**20} MiB free; "
            f"keeping {keep_free // 2**20} MiB free (receiver.min_free_bytes)"
        )
