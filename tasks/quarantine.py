"""Set aside files the autoloader cannot use, each with a reason file beside it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from receiver.durable import fsync_dir, write_atomic
from tasks.extract import text

MAX_STEM = 100
"""Names stay well under the 255-byte limit of most filesystems, suffixes included."""


def quarantine_stem(path: Path, folder: Path) -> str:
    """The landed name without its suffix, shortened if long, made unique in `folder`.

    Files dropped into landing by hand can share a name; quarantine never overwrites.
    """
    stem = path.stem
    if len(stem.encode("utf-8", "surrogateescape")) > MAX_STEM:
        digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        stem = f"{stem[:60]}-{digest}"
    while (folder / f"{stem}.dcm").exists() or (folder / f"{stem}.reason.json").exists():
        stem = f"{stem}-{uuid.uuid4().hex[:8]}"
    return stem


def quarantine(path: Path, folder: Path, reason: str, detail: str) -> Path:
    """Move `path` into `folder` as ``<name>.dcm`` with ``<name>.reason.json`` beside it.

    The reason file is written first, so a crash never leaves an unexplained file.
    Returns the quarantined file's path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem = quarantine_stem(path, folder)
    target = folder / f"{stem}.dcm"
    record = {
        "reason": reason,
        "detail": detail[:2000],
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "landed_name": text(path.name),
    }
    write_atomic(folder / f"{stem}.reason.json", json.dumps(record, indent=2).encode())
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
