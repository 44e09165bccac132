"""Read a landed file and decide whether the autoloader can use it."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import FileDataset
from pydicom.errors import InvalidDicomError

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
"""Without these an instance has no place in the Patient/Study/Series/Instance hierarchy."""

MIN_ELEMENTS = 4
"""Fewer top-level elements than this is not an instance, whatever pydicom made of it."""


class Rejected(Exception):
    """A file the autoloader cannot use; it goes to quarantine with `reason` and `detail`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def read_instance(path: Path) -> FileDataset:
    """Parse `path` completely, or raise `Rejected` saying why not.

    A parse that stops before the end of the file is a rejection too: pydicom
    quietly returns what it read so far from some truncated files.
    """
    size = path.stat().st_size
    if size == 0:
        raise Rejected("empty-file", "zero-byte file")
    with path.open("rb") as fh:
        try:
            ds = dcmread(fh)
        except InvalidDicomError as exc:
            raise Rejected("not-dicom", str(exc)) from None
        except Exception as exc:  # pydicom raises many types on damaged input
            raise Rejected("unreadable", f"{type(exc).__name__}: {exc}") from None
        consumed = fh.tell()
    if consumed < size:
        raise Rejected("truncated", f"parsing stopped at byte {consumed} of {size}")
    if len(ds) < MIN_ELEMENTS:
        raise Rejected("empty-dataset", f"only {len(ds)} element(s) in the dataset")
    missing = [kw for kw in REQUIRED_UIDS if not str(ds.get(kw, "") or "").strip("\x00 ")]
    if missing:
        raise Rejected("missing-uid", f"no {', '.join(missing)}")
    return ds
