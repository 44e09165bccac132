"""Set aside files the autoloader cannot use, each with a reason file beside it."""

from __future__ import annotations

import errno
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from receiver.durable import fsync_dir, write_atomic


def quarantine(path: Path, folder: Path, reason: str, detail: str) -> Path:
    """Move `path` into `folder` as ``<name>.dcm`` with ``<name>.reason.json`` beside it.

    The reason file is written first, so a crash never leaves an unexplained file.
    Returns the quarantined file's path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{path.stem}.dcm"
    record = {
        "reason": reason,
        "detail": detail[:2000],
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "landed_name": path.name,
    }
    write_atomic(folder / f"{path.stem}.reason.json", json.dumps(record, indent=2).encode())
    try:
        os.replace(path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # another filesystem: copy durably, then drop the original
        with path.open("rb") as src:
            write_atomic(target, src.read())
        path.unlink()
    else:
        fsync_dir(folder)
    fsync_dir(path.parent)
    return target
