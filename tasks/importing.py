"""Bulk import: existing folders, DICOM media (DICOMDIR) and zip files into landing.

Each DICOM file found is copied into the landing zone with the receiver's own
durability rules (write, fsync, rename), then the normal autoload takes over; files
that are not DICOM are skipped and counted, not errors. A DICOMDIR is read as a
File-set (pydicom's File-set Reader), so media is imported by what it indexes.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from pydicom.uid import MediaStorageDirectoryStorage

from receiver.landing import LandingZone
from receiver.space import ensure_room
from tasks.parse import is_dicomdir


@dataclass(frozen=True)
class Candidate:
    """A file that may be DICOM: where it was found, and how to read its bytes."""

    where: str
    read: Callable[[], bytes]


@dataclass
class ImportReport:
    """What an import did, by outcome."""

    imported: int = 0
    skipped: int = 0
    """Not DICOM (or a DICOMDIR, whose files are imported instead)."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """Files that could not be read or landed, and why."""


def is_dicom(data: bytes) -> bool:
    """A DICOM file: the Part 10 prefix, or (no preamble) a dataset pydicom can parse
    with a SOP Instance UID in it."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    try:
        from io import BytesIO

        ds = dcmread(BytesIO(data), force=True, stop_before_pixels=True)
    except Exception:
        return False
    return "SOPInstanceUID" in ds and "SOPClassUID" in ds


def is_dicomdir_file(path: Path) -> bool:
    """A file named DICOMDIR that is one (autoload's own test, `tasks.parse.is_dicomdir`)."""
    if path.name.upper() != "DICOMDIR":
        return False
    try:
        return is_dicomdir(dcmread(path, stop_before_pixels=True))
    except (InvalidDicomError, OSError, ValueError):
        return False


def _file(path: Path) -> Candidate:
    return Candidate(str(path), path.read_bytes)


def _fileset(dicomdir: Path) -> Iterator[Candidate]:
    for instance in FileSet(dicomdir):
        yield _file(Path(instance.path))


def _zip(path: Path) -> Iterator[Candidate]:
    with zipfile.ZipFile(path) as archive:
        names = [
            info.filename
            for info in archive.infolist()
            if not info.is_dir() and Path(info.filename).name.upper() != "DICOMDIR"
        ]  # a zipped File-set's DICOMDIR indexes files that are imported anyway
    for name in names:

        def read(name: str = name) -> bytes:
            with zipfile.ZipFile(path) as archive:
                return archive.read(name)

        yield Candidate(f"{path}!{name}", read)


def candidates(paths: Iterable[Path], report: ImportReport) -> Iterator[Candidate]:
    """Every file under `paths` that may be DICOM; media and zips opened."""
    for root in paths:
        if root.is_dir():
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                if "DICOMDIR" in files and is_dicomdir_file(Path(folder) / "DICOMDIR"):
                    report.skipped += 1  # its files are walked here anyway
                for name in sorted(files):
                    if not name.startswith(".") and name != "DICOMDIR":
                        yield from candidates([Path(folder) / name], report)
        elif is_dicomdir_file(root):
            report.skipped += 1
            yield from _fileset(root)
        elif zipfile.is_zipfile(root):
            yield from _zip(root)
        elif root.is_file():
            yield _file(root)
        else:
            report.failed.append((str(root), "no such file or folder"))


def import_into(
    paths: Iterable[Path],
    landing: LandingZone,
    keep_free: int = 0,
    on_file: Callable[[str, str], None] = lambda where, outcome: None,
) -> ImportReport:
    """Copy every DICOM file under `paths` into `landing`; `on_file(where, outcome)` per file.

    Like the receiver, the import keeps `keep_free` bytes free on the landing
    filesystem: it stops (raising NoRoom) rather than fill it.
    """
    report = ImportReport()
    for candidate in candidates(paths, report):
        try:
            data = candidate.read()
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            report.failed.append((candidate.where, f"unreadable: {exc}"))
            on_file(candidate.where, "failed")
            continue
        if not is_dicom(data) or MediaStorageDirectoryStorage.encode() in data[:512]:
            report.skipped += 1
            on_file(candidate.where, "skipped")
            continue
        ensure_room(landing.root, len(data), keep_free)
        try:
            landing.store(data)
        except OSError as exc:
            report.failed.append((candidate.where, f"landing write failed: {exc.strerror or exc}"))
            on_file(candidate.where, "failed")
            continue
        report.imported += 1
        on_file(candidate.where, "imported")
    return report
