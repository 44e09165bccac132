"""Where an anonymized instance lives in the archive, and writing it there once."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from receiver.durable import write_atomic


def archive_relpath(ds: Dataset) -> Path:
    """``<patient>/<study>/<series>/<sop-instance>.dcm`` from anonymized identifiers."""
    parts = [str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)]
    for part in parts:
        if not part or "/" in part or part in {".", ".."}:
            raise ValueError(f"identifier {part!r} cannot name an archive folder")
    return Path(*parts, f"{ds.SOPInstanceUID}.dcm")


def encode(ds: Dataset) -> bytes:
    """The dataset in DICOM file format, in the transfer syntax it arrived in."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Written:
    """An instance's file in the archive, as it is on disk."""

    path: Path
    size: int
    sha256: str
    new: bool
    """False when the file was already there (a repeat, or a re-run after a crash)."""


def write_once(path: Path, data: bytes) -> Written:
    """Write `data` at `path` durably unless a file is there already; the first one wins.

    A second object with the same SOP Instance UID is the same instance (PS3.3
    C.12.1.1.1); its archive copy is left alone and described as it is on disk.
    """
    try:
        write_atomic(path, data, overwrite=False)
    except FileExistsError:
        existing = path.read_bytes()
        return Written(path, len(existing), hashlib.sha256(existing).hexdigest(), new=False)
    return Written(path, len(data), hashlib.sha256(data).hexdigest(), new=True)


def read_archived(path: Path) -> Dataset:
    """The header of an archived file (no pixel data), to describe it in the catalog."""
    return dcmread(path, stop_before_pixels=True)
