"""Bulk import: existing folders, DICOM media (DICOMDIR) and zip files into landing.

Each DICOM file found is copied into the landing zone with the receiver's own
durability rules (write, fsync, rename), then the normal autoload takes over; files
that are not DICOM are skipped and counted, not errors. A DICOMDIR is read as a
File-set (pydicom's File-set Reader), so media is imported by what it indexes; each
file it names that is missing is a failure. Failures too: a zip (by name or first
bytes) that does not open, and anything not a regular file or folder (FIFO, socket,
device), which is never opened.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
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
    """Not DICOM."""
    dicomdirs: int = 0
    """DICOMDIR files read (their files are imported, not they)."""
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
    if path.name.upper() != "DICOMDIR" or not path.is_file():  # a FIFO is never opened
        return False
    try:
        return is_dicomdir(dcmread(path, stop_before_pixels=True))
    except (InvalidDicomError, OSError, ValueError):
        return False


ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
"""How a zip file starts: a local file header, an empty archive's end record, a split marker."""


def looks_like_zip(path: Path) -> bool:
    """A zip by its name or its first bytes (a DICOM file's preamble may start with PK too)."""
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        return True
    with path.open("rb") as fh:
        head = fh.read(132)
    return head[:4] in ZIP_MAGIC and head[128:132] != b"DICM"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _file(path: Path) -> Candidate:
    return Candidate(str(path), path.read_bytes)


def fileset_members(dicomdir: Path) -> tuple[list[Path], list[Path]]:
    """The files a DICOMDIR indexes: those present, and those it names that are missing.

    pydicom warns once per missing file and leaves it out; the warnings are caught here,
    so each missing file is reported as a failure instead of printed.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        present = [Path(instance.path) for instance in FileSet(dicomdir)]
    missing = [
        _as_given(dicomdir, Path(found.group(1)))
        for w in caught
        if (found := re.search(r"does not exist: (.+)$", str(w.message)))
    ]
    return present, missing


def _as_given(dicomdir: Path, path: Path) -> Path:
    """`path` under the DICOMDIR's folder as the user named it, not resolved."""
    try:
        return dicomdir.parent / path.relative_to(dicomdir.parent.resolve())
    except ValueError:
        return path


def _zip(path: Path, report: ImportReport) -> Iterator[Candidate]:
    with zipfile.ZipFile(path) as archive:
        names = []
        for info in archive.infolist():
            if info.is_dir():
                continue
            if Path(info.filename).name.upper() == "DICOMDIR":
                report.dicomdirs += 1  # a zipped File-set's DICOMDIR: its files are in the zip
            else:
                names.append(info.filename)
    for name in names:

        def read(name: str = name) -> bytes:
            with zipfile.ZipFile(path) as archive:
                return archive.read(name)

        yield Candidate(f"{path}!{name}", read)


def candidates(
    paths: Iterable[Path],
    report: ImportReport,
    fail: Callable[[str, str], None],
) -> Iterator[Candidate]:
    """Every file under `paths` that may be DICOM; media and zips opened.

    What cannot be read is passed to `fail(where, why)`: a missing path, a FIFO, socket or
    device (never opened, so never waited on), a zip that does not open, and each file a
    DICOMDIR names that is not there.
    """
    for root in paths:
        try:
            mode = root.stat().st_mode
        except FileNotFoundError:
            fail(str(root), "no such file or folder")
            continue
        except OSError as exc:
            fail(str(root), f"unreadable: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(mode):
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                here = Path(folder)
                media = "DICOMDIR" in files and is_dicomdir_file(here / "DICOMDIR")
                if media:
                    report.dicomdirs += 1  # its files are walked here anyway
                    for gone in _members(here / "DICOMDIR", fail)[1]:
                        fail(str(gone), f"named by {here / 'DICOMDIR'} but missing")
                for name in sorted(files):
                    if not name.startswith(".") and not (media and name == "DICOMDIR"):
                        yield from candidates([here / name], report, fail)
        elif not stat.S_ISREG(mode):
            fail(str(root), f"not a regular file or folder ({_kind(mode)}), not opened")
        elif is_dicomdir_file(root):
            report.dicomdirs += 1
            present, missing = _members(root, fail)
            for gone in missing:
                fail(str(gone), f"named by {root} but missing")
            yield from (_file(path) for path in present)
        elif looks_like_zip(root):
            try:
                yield from _zip(root, report)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
                why = "empty file" if root.stat().st_size == 0 else str(exc)
                fail(str(root), f"not a readable zip ({why})")
        else:
            yield _file(root)


def _members(dicomdir: Path, fail: Callable[[str, str], None]) -> tuple[list[Path], list[Path]]:
    try:
        return fileset_members(dicomdir)
    except (InvalidDicomError, OSError, ValueError, KeyError, AttributeError) as exc:
        fail(str(dicomdir), f"not a readable DICOMDIR ({exc})")
        return [], []


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

    def fail(where: str, why: str) -> None:
        report.failed.append((where, why))
        on_file(where, "failed")

    for candidate in candidates(paths, report, fail):
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
