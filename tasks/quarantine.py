"""Set aside files the autoloader cannot use, each with a reason file beside it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from receiver.audit import audit
from receiver.dicomfile import CHUNK
from receiver.durable import fsync_dir, write_atomic, write_atomic_with
from receiver.landing import is_received_name
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
        # another filesystem: copy durably, in chunks, then drop the original
        with path.open("rb") as src:
            write_atomic_with(target, lambda dst: shutil.copyfileobj(src, dst, CHUNK))
        path.unlink()
    else:
        fsync_dir(folder)
    fsync_dir(path.parent)
    # A name the receiver gave carries no patient data; a hand-dropped one might.
    audit("quarantined", file=stem if is_received_name(path.name) else None, reason=reason)
    return target


REASON_SUFFIX = ".reason.json"

LANDED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,200}\.dcm")
"""A name that may go back into landing as it was: no folder, not hidden, ends in .dcm."""


class QuarantineError(Exception):
    """A quarantined file that cannot be released as asked; the message says why."""


@dataclass(frozen=True)
class Entry:
    """One file in quarantine, as its reason file describes it."""

    folder: Path
    name: str
    """The quarantine name: ``<name>.dcm`` beside ``<name>.reason.json``."""
    reason: str
    detail: str
    time: datetime | None
    landed_name: str
    size: int | None
    """Bytes of the quarantined file; None when only its reason file is left."""

    @property
    def path(self) -> Path:
        return self.folder / f"{self.name}.dcm"

    @property
    def reason_path(self) -> Path:
        return self.folder / f"{self.name}{REASON_SUFFIX}"


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def entries(folder: Path) -> list[Entry]:
    """Every quarantined file, oldest first; a file without its reason file is `unknown`."""
    if not folder.is_dir():
        return []
    found: dict[str, Entry] = {}
    for reason_file in folder.glob(f"*{REASON_SUFFIX}"):
        name = reason_file.name.removesuffix(REASON_SUFFIX)
        try:
            record = json.loads(reason_file.read_text(encoding="utf-8"))
            when: datetime | None = datetime.fromisoformat(record["time"])
        except (OSError, ValueError, KeyError, TypeError):
            record, when = {"reason": "unknown", "detail": "reason file unreadable"}, None
        found[name] = Entry(
            folder,
            name,
            str(record.get("reason", "unknown")),
            str(record.get("detail", "")),
            when,
            str(record.get("landed_name", "")),
            _size(folder / f"{name}.dcm"),
        )
    for path in folder.glob("*.dcm"):
        if path.stem not in found and not path.name.startswith("."):
            found[path.stem] = Entry(
                folder, path.stem, "unknown", "no reason file", None, path.name, _size(path)
            )
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(found.values(), key=lambda e: (e.time or oldest, e.name))


def _landing_name(entry: Entry, landing_dir: Path) -> str:
    """The name it had in landing (which says when it arrived), else a new one like the
    receiver's."""
    if LANDED_NAME.fullmatch(entry.landed_name) and not (landing_dir / entry.landed_name).exists():
        return entry.landed_name
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex}.dcm"


def release(entry: Entry, landing_dir: Path) -> Path | None:
    """Move a quarantined file back into landing for autoload; its reason file goes after.

    The move is one rename, so the file is in quarantine or in landing, never both
    and never neither; the reason file is removed only once the move is durable.
    A reason file left without its file (a crash came between) is just removed.
    Returns the landed path, or None when only a reason file was left.
    """
    if entry.size is None:
        entry.reason_path.unlink(missing_ok=True)
        fsync_dir(entry.folder)
        return None
    landing_dir.mkdir(parents=True, exist_ok=True)
    target = landing_dir / _landing_name(entry, landing_dir)
    try:
        os.rename(entry.path, target)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise QuarantineError(
                f"cannot move {entry.name} back: quarantine and landing are on different"
                " filesystems (move it into landing by hand)"
            ) from None
        raise
    fsync_dir(landing_dir)
    fsync_dir(entry.folder)
    entry.reason_path.unlink(missing_ok=True)
    fsync_dir(entry.folder)
    return target
