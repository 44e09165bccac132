"""Read a landed file and decide whether the autoloader can use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
"""Without these an instance has no place in the Patient/Study/Series/Instance hierarchy."""

INSTANCE_UIDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
"""UIDs that name this instance and its series and study, and so its archive path."""

MIN_ELEMENTS = 4
"""Fewer top-level elements than this is not an instance, whatever pydicom made of it."""


class Rejected(Exception):
    """A file the autoloader cannot use; it goes to quarantine with `reason` and `detail`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _ShortReadWatch:
    """A file wrapper noting reads that got fewer bytes than asked for.

    pydicom returns a short value without complaint when a file ends inside it;
    a partial read is how truncation shows.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.short_read = False

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        if size > 0 and 0 < len(data) < size:
            self.short_read = True
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _pixel_data_short(ds: FileDataset) -> bool:
    """Native (uncompressed) Pixel Data shorter than its image size says it must be."""
    try:
        if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
            return False
        return len(ds.PixelData) < get_expected_length(ds)
    except (AttributeError, KeyError, TypeError, ValueError):
        return False  # incomplete image description: the file may still be archived


def read_instance(path: Path) -> FileDataset:
    """Parse `path` completely, or raise `Rejected` saying why not.

    A parse that stops before the end of the file, or values cut short by the end
    of the file, are rejections too: pydicom quietly returns what it read so far.
    """
    size = path.stat().st_size
    if size == 0:
        raise Rejected("empty-file", "zero-byte file")
    with path.open("rb") as raw:
        fh = _ShortReadWatch(raw)
        try:
            ds = dcmread(fh)
        except InvalidDicomError as exc:
            raise Rejected("not-dicom", str(exc)) from None
        except Exception as exc:  # pydicom raises many types on damaged input
            raise Rejected("unreadable", f"{type(exc).__name__}: {exc}") from None
        consumed = raw.tell()
    if consumed < size:
        raise Rejected("truncated", f"parsing stopped at byte {consumed} of {size}")
    if fh.short_read or _pixel_data_short(ds):
        raise Rejected("truncated", f"the file ends inside a value ({size} bytes)")
    if len(ds) < MIN_ELEMENTS:
        raise Rejected("empty-dataset", f"only {len(ds)} element(s) in the dataset")
    missing = [kw for kw in REQUIRED_UIDS if not str(ds.get(kw, "") or "").strip("\x00 ")]
    if missing:
        raise Rejected("missing-uid", f"no {', '.join(missing)}")
    check_identifying_uids(ds)
    return ds


def check_identifying_uids(ds: FileDataset) -> None:
    """The instance, series and study UIDs must each be one text value.

    A malformed one (bad characters, too long, even a path) is still usable: the
    anonymizer replaces it with a new UID, keyed on the value as it came.
    """
    for keyword in INSTANCE_UIDS:
        elem = ds[keyword]
        if elem.VM != 1 or isinstance(elem.value, bytes | bytearray):
            raise Rejected("invalid-uid", f"{keyword} is not a single text value")
