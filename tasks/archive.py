"""Where an anonymized instance lives in the archive, and writing it there once."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from receiver.durable import write_atomic

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
"""Under the archive: one small file per archived SOP Instance UID, naming its archive path."""


@dataclass(frozen=True)
class Written:
    """An instance's file in the archive, as it is on disk."""

    archive_dir: Path
    relpath: Path
    size: int
    sha256: str
    new: bool
    """False when the instance was archived already (a repeat, or a re-run after a crash)."""

    @property
    def path(self) -> Path:
        return self.archive_dir / self.relpath


def index_entry(archive_dir: Path, sop_instance_uid: str) -> Path:
    """Where the archive records that `sop_instance_uid` is archived (sharded by its end)."""
    return archive_dir / INDEX_DIR / sop_instance_uid[-2:] / sop_instance_uid


def _describe(archive_dir: Path, relpath: Path, new: bool) -> Written:
    data = (archive_dir / relpath).read_bytes()
    return Written(archive_dir, relpath, len(data), hashlib.sha256(data).hexdigest(), new)


def archive_once(archive_dir: Path, relpath: Path, data: bytes) -> Written:
    """Archive `data` at `relpath` unless its SOP instance is archived already, anywhere.

    A second object with the same SOP Instance UID is the same instance (PS3.3
    C.12.1.1.1), even when it arrives under another patient or study: the first
    copy stays, and the repeat is described by the copy on disk. The instance is
    claimed in the index first, so a crash between claim and write is repaired
    by the next copy (or the re-run) that finds the claim without its file.
    """
    entry = index_entry(archive_dir, relpath.stem)
    claim = relpath.as_posix().encode()
    try:
        write_atomic(entry, claim, overwrite=False)
    except FileExistsError:
        claimed = Path(entry.read_text(encoding="utf-8"))
        if (archive_dir / claimed).is_file():
            return _describe(archive_dir, claimed, new=False)
        write_atomic(entry, claim)  # claimed, never written: this copy takes over
    try:
        write_atomic(archive_dir / relpath, data, overwrite=False)
    except FileExistsError:  # written, then the claim was lost with a crash
        return _describe(archive_dir, relpath, new=False)
    return Written(archive_dir, relpath, len(data), hashlib.sha256(data).hexdigest(), new=True)


def read_archived(path: Path) -> Dataset:
    """The header of an archived file (no pixel data), to describe it in the catalog."""
    return dcmread(path, stop_before_pixels=True)
