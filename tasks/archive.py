"""Where an anonymized instance lives in the archive, and writing its versions there."""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydicom import dcmread
from pydicom.dataset import Dataset

from receiver.durable import fsync_dir, write_atomic

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,63}")
"""What an archive folder or file name may be: a UID or a patient pseudonym, nothing else."""


def archive_relpath(ds: Dataset) -> Path:
    """``<patient>/<study>/<series>/<sop-instance>.dcm`` from anonymized identifiers.

    Each part must look like a UID or a pseudonym, so no value can climb out of the
    archive or name something else, even if a rule failed to replace it.
    """
    keywords = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    parts = [str(ds.get(keyword, "")) for keyword in keywords]
    for part in parts:
        if not SAFE_NAME.fullmatch(part) or ".." in part:
            raise ValueError(f"identifier {part[:80]!r} cannot name an archive folder or file")
    *folders, sop = parts
    return Path(*folders, f"{sop}.dcm")


def encode(ds: Dataset) -> bytes:
    """The dataset in DICOM file format, in the transfer syntax it arrived in."""
    buffer = io.BytesIO()
    ds.preamble = bytes(128)  # a preamble is free space: never copy the sender's
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


INDEX_DIR = ".sop-index"
"""Under the archive: one small JSON file per archived SOP Instance UID, naming its file
and every version archived so far."""

Kind = Literal["new", "version", "duplicate"]


@dataclass(frozen=True)
class Written:
    """An instance's file in the archive, as it is on disk."""

    archive_dir: Path
    relpath: Path
    size: int
    sha256: str
    version: int
    kind: Kind
    """``new``: first archived; ``version``: different content replaced the archived one;
    ``duplicate``: this content is archived already (a repeat, or a re-run after a crash)."""

    @property
    def path(self) -> Path:
        return self.archive_dir / self.relpath

    @property
    def new(self) -> bool:
        return self.kind != "duplicate"


def index_entry(archive_dir: Path, sop_instance_uid: str) -> Path:
    """Where the archive records that `sop_instance_uid` is archived (sharded by its end)."""
    return archive_dir / INDEX_DIR / sop_instance_uid[-2:] / sop_instance_uid


@dataclass(frozen=True)
class Entry:
    """An index entry: where the current version is, and every version seen so far."""

    relpath: str
    sha256: str
    version: int
    versions: tuple[dict[str, Any], ...]
    """``{"version", "sha256", "landed"}`` per version, oldest first."""
    previous: str | None = None
    """The file of the version before, while it may still need removing (it moved)."""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "relpath": self.relpath,
                "sha256": self.sha256,
                "version": self.version,
                "versions": list(self.versions),
                "previous": self.previous,
            }
        ).encode()


def read_entry(archive_dir: Path, entry: Path) -> Entry | None:
    """The index entry, None if there is none; a plain path (older layout) is version 1."""
    try:
        text = entry.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    if not text.startswith("{"):
        data = (archive_dir / text).read_bytes() if (archive_dir / text).is_file() else b""
        digest = hashlib.sha256(data).hexdigest()
        return Entry(text, digest, 1, ({"version": 1, "sha256": digest, "landed": None},))
    raw = json.loads(text)
    return Entry(
        raw["relpath"], raw["sha256"], int(raw["version"]), tuple(raw["versions"]), raw["previous"]
    )


def archive_version(archive_dir: Path, relpath: Path, data: bytes, landed: str) -> Written:
    """Archive `data` as the current version of its SOP instance, unless it is one already.

    A second object with the same SOP Instance UID is the same instance (PS3.3
    C.12.1.1.1), even when it arrives under another patient or study. The same
    bytes again are a duplicate; other bytes are a new version, which replaces the
    archived file (at the path its own identifiers give). The file is written before
    the index entry, so a crash in between is repaired by the re-run; and the landed
    file that made each version is remembered, so a re-run after a crash gets back
    the version that file made instead of making another.
    """
    entry_path = index_entry(archive_dir, relpath.stem)
    digest = hashlib.sha256(data).hexdigest()
    current = read_entry(archive_dir, entry_path)
    kind: Kind
    version: int
    versions: tuple[dict[str, Any], ...]
    if current is None:
        version, kind, versions = 1, "new", ()
    elif (archive_dir / current.relpath).is_file():
        if current.previous:
            _remove(archive_dir / current.previous)  # a crash came between move and removal
        for seen in current.versions:
            if seen.get("landed") == landed and seen["sha256"] == digest:  # this file, again
                return Written(
                    archive_dir, relpath, len(data), digest, seen["version"], "duplicate"
                )
        if current.sha256 == digest:
            return Written(archive_dir, relpath, len(data), digest, current.version, "duplicate")
        version, kind, versions = current.version + 1, "version", current.versions
    elif current.sha256 == digest:  # indexed, its file lost: write it again
        version, kind, versions = current.version, "new", current.versions[:-1]
    else:
        version, kind, versions = current.version + 1, "version", current.versions
    versions = (*versions, {"version": version, "sha256": digest, "landed": landed})
    write_atomic(archive_dir / relpath, data)
    moved = current.relpath if current and current.relpath != relpath.as_posix() else None
    write_atomic(entry_path, Entry(relpath.as_posix(), digest, version, versions, moved).encode())
    if moved:
        _remove(archive_dir / moved)
    return Written(archive_dir, relpath, len(data), digest, version, kind)


def _remove(path: Path) -> None:
    if path.exists():
        path.unlink()
        fsync_dir(path.parent)


def read_archived(path: Path) -> Dataset:
    """The header of an archived file (no pixel data), to describe it in the catalog."""
    return dcmread(path, stop_before_pixels=True)
