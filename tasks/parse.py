"""Read a landed file and decide whether the autoloader can use it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileDataset
from pydicom.uid import AllTransferSyntaxes, MediaStorageDirectoryStorage

from receiver.dicomfile import Bulk, Unreadable, read_file

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
"""Without these an instance has no place in the Patient/Study/Series/Instance hierarchy."""

INSTANCE_UIDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
"""UIDs that name this instance and its series and study, and so its archive path."""

MIN_ELEMENTS = 4
"""Fewer top-level elements than this is not an instance, whatever pydicom made of it."""

MAX_DEPTH = 64
"""Sequences nested deeper than this are refused. Real instances nest a handful deep
(structured reports a few dozen at most); hundreds of levels only exhaust the stack,
and pydicom's writer takes minutes to report the failure."""

STREAM_THRESHOLD = 4 * 2**20
"""Files this large are read without their pixel data, which is later copied in chunks.
Read whole, a file costs about three times its size in memory until it is archived."""

DIRECTORY_RECORDS = 0x00041220
"""Directory Record Sequence: the body of a DICOMDIR."""


class Rejected(Exception):
    """A file the autoloader cannot use; it goes to quarantine with `reason` and `detail`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Landed:
    """A parsed landed file. With `bulk`, the pixel data stayed in the file at `path`."""

    ds: FileDataset
    path: Path
    bulk: Bulk | None = None


def read_instance(path: Path) -> FileDataset:
    """Parse `path` completely, pixel data included, or raise `Rejected` saying why not."""
    return read_landed(path, streaming=False).ds


Prune = Callable[[FileDataset], object]
"""Deletes elements about to be removed anyway, before the checks parse every value."""


def read_landed(path: Path, *, streaming: bool = True, prune: Prune | None = None) -> Landed:
    """Parse `path`, or raise `Rejected` saying why not.

    With `streaming`, files of `STREAM_THRESHOLD` bytes or more are parsed without
    their pixel data: `Landed.bulk` says where it lies, checked to fit in the file,
    for `tasks.archive.encode_streamed` to copy. Whatever lengths a file claims,
    reading it takes no more memory than its size (`receiver.dicomfile.read_file`).
    `prune` (`tasks.prune.drop_removed_private`) runs once the file is known to be an
    instance, before its values are parsed.
    """
    try:
        stream = streaming and path.stat().st_size >= STREAM_THRESHOLD
        ds, bulk = read_file(path, stream=stream)
    except Unreadable as exc:
        raise Rejected(exc.reason, exc.detail) from None
    check_instance(ds, prune)
    return Landed(ds, path, bulk)


def check_instance(ds: FileDataset, prune: Prune | None = None) -> None:
    """What makes a parsed file an instance we can archive; raises `Rejected`."""
    if is_dicomdir(ds):
        raise Rejected("dicomdir", "a media directory (DICOMDIR), not an instance")
    if len(ds) < MIN_ELEMENTS:
        raise Rejected("empty-dataset", f"only {len(ds)} element(s) in the dataset")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if not syntax:
        raise Rejected("no-transfer-syntax", "the file meta does not say how it is encoded")
    if syntax not in AllTransferSyntaxes:
        raise Rejected("unknown-transfer-syntax", f"transfer syntax {str(syntax)[:64]} is unknown")
    if prune is not None:
        prune(ds)
    check_depth(ds)
    missing = [kw for kw in REQUIRED_UIDS if not str(ds.get(kw, "") or "").strip("\x00 ")]
    if missing:
        raise Rejected("missing-uid", f"no {', '.join(missing)}")
    check_identifying_uids(ds)


def is_dicomdir(ds: FileDataset) -> bool:
    """A DICOMDIR (a media directory, not an instance): by its SOP class or its records."""
    meta_class = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip("\x00 ")
    return meta_class == MediaStorageDirectoryStorage or DIRECTORY_RECORDS in ds


def check_depth(ds: Dataset, limit: int = MAX_DEPTH) -> None:
    """Refuse sequences nested more than `limit` deep, walking without recursion.

    Reading each element parses it (pydicom defers that), so damage anywhere in
    the dataset shows here as `unreadable`.
    """
    stack = [(ds, 0)]
    try:
        while stack:
            current, depth = stack.pop()
            for elem in current:
                if elem.VR != "SQ":
                    continue
                if depth + 1 > limit:
                    raise Rejected("too-deep", f"sequences nested more than {limit} deep")
                stack.extend((item, depth + 1) for item in elem.value)
    except RecursionError:
        raise Rejected("too-deep", "sequences nested too deep to parse") from None
    except Rejected:
        raise
    except Exception as exc:
        raise Rejected("unreadable", f"{type(exc).__name__}: {exc}") from None


def check_identifying_uids(ds: FileDataset) -> None:
    """The instance, series and study UIDs must each be one text value.

    A malformed one (bad characters, too long, even a path) is still usable: the
    anonymizer replaces it with a new UID, keyed on the value as it came.
    """
    for keyword in INSTANCE_UIDS:
        elem = ds[keyword]
        if elem.VM != 1 or isinstance(elem.value, bytes | bytearray):
            raise Rejected("invalid-uid", f"{keyword} is not a single text value")
