"""Reading DICOM files without trusting their lengths or holding their bulk data.

A length field is whatever the sender wrote: 4 GB in a 1 KB file, a sequence that
never ends. `BoundedReader` never asks the file for more than it holds, so such a
value costs what the file holds, not what it claims. `locate_bulk` finds where the
pixel data element begins and ends without reading its value, so a 2 GB image can
be checked, and copied, in chunks.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID, AllTransferSyntaxes

PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
"""Float, Double Float and (plain) Pixel Data: where pydicom's ``stop_before_pixels`` stops."""

ITEM = 0xFFFEE000
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
"""Explicit VRs with a reserved field and a 4-byte length (PS3.5 7.1.2)."""

CHUNK = 1 << 20
"""Bytes per read when copying or hashing a file."""

IN_MEMORY = 4 * 2**20
"""Files up to this size are read into memory first and parsed from there: a parser
asks for its position thousands of times per file, each a system call on a file."""

MAX_INFLATED = 256 * 2**20
"""A deflated dataset may inflate to this many bytes, no more: pydicom inflates it whole
in memory, and a few kilobytes of zlib stream can claim gigabytes."""


class Unreadable(Exception):
    """A file that is not a readable DICOM instance: `reason` is a short code, `detail` why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BoundedReader:
    """A binary file wrapper whose reads never ask for more than the file holds.

    Python allocates a read's full requested size before reading, so a value
    declaring 4 GB would cost 4 GB of memory even in a tiny file. Reads asking for
    more than is left are cut to what is left and noted in `short_read`: that is
    how a file that ends inside a value shows. Asking for a tag at the very end is
    how a parser finds the end, and is not noted.
    """

    TAG_READ = 12
    """Reads up to this size at the end of the file are a parser looking for the next tag."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self._fh = fh
        self.size = size
        self.short_read = False
        # A parser calls these thousands of times per file: bound once, not looked up
        # through __getattr__ each time.
        self.tell = fh.tell
        self.seek = fh.seek
        self._read = fh.read

    def read(self, size: int | None = -1) -> bytes:
        left = self.size - self.tell()
        if left < 0:
            left = 0
        if size is None or size < 0:
            return self._read(left)
        if size > left:
            if left or size > self.TAG_READ:
                self.short_read = True
            size = left
        return self._read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


class BrokenBulk(ValueError):
    """The pixel data element is damaged or runs past the end of the file."""


@dataclass(frozen=True)
class Bulk:
    """Where a pixel data element lies in a file: [start, end), its header included."""

    tag: int
    start: int
    end: int
    length: int | None
    """The value's length; None when undefined (encapsulated pixel data)."""

    @property
    def size(self) -> int:
        return self.end - self.start


def _element_header(fh: BinaryIO, implicit: bool, little: bool) -> tuple[int, int]:
    """Read one element's tag and value length at the current position."""
    endian = "<" if little else ">"
    head = fh.read(8)
    if len(head) < 8:
        raise BrokenBulk("the file ends inside an element header")
    group, elem = struct.unpack(f"{endian}HH", head[:4])
    if implicit:
        (length,) = struct.unpack(f"{endian}L", head[4:])
    elif head[4:6] in LONG_VRS:
        more = fh.read(4)
        if len(more) < 4:
            raise BrokenBulk("the file ends inside an element header")
        (length,) = struct.unpack(f"{endian}L", more)
    else:
        (length,) = struct.unpack(f"{endian}H", head[6:])
    return group << 16 | elem, length


def locate_bulk(fh: BinaryIO, at: int, size: int, implicit: bool, little: bool) -> Bulk | None:
    """The pixel data element starting at offset `at` of a file of `size` bytes.

    None when the element at `at` is not pixel data. Raises `BrokenBulk` when the
    value runs past the end of the file, or an encapsulated value's items do.
    Encapsulated fragments are walked by their item headers alone (8 bytes each).
    """
    fh.seek(at)
    tag, length = _element_header(fh, implicit, little)
    if tag not in PIXEL_TAGS:
        return None
    value_start = fh.tell()
    if length != UNDEFINED_LENGTH:
        if value_start + length > size:
            raise BrokenBulk(
                f"pixel data of {length} bytes at byte {value_start} runs past the end ({size})"
            )
        return Bulk(tag, at, value_start + length, length)
    position = value_start
    while True:
        fh.seek(position)
        item, item_length = _element_header(fh, True, little)  # items are always tag + length
        position = fh.tell()
        if item == SEQUENCE_DELIMITER:
            return Bulk(tag, at, position, None)
        if item != ITEM:
            raise BrokenBulk(f"encapsulated pixel data holds tag {item:08X} where an item belongs")
        if item_length == UNDEFINED_LENGTH or position + item_length > size:
            raise BrokenBulk("an encapsulated pixel data fragment runs past the end of the file")
        position += item_length


def copy_range(src: BinaryIO, start: int, end: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield the bytes of `src` in [start, end), `chunk` bytes at a time."""
    src.seek(start)
    left = end - start
    while left > 0:
        data = src.read(min(chunk, left))
        if not data:
            raise BrokenBulk(f"the file ended {left} bytes early while copying")
        left -= len(data)
        yield data


def inflated_size_exceeds(fh: BinaryIO, start: int, limit: int) -> bool:
    """Whether the raw deflate stream at `start` inflates to more than `limit` bytes.

    Inflates in chunks and keeps nothing; a broken stream is left for the parser
    to report.
    """
    fh.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while not inflater.eof and (data := fh.read(CHUNK)):
            while data and not inflater.eof:
                total += len(inflater.decompress(data, CHUNK))
                if total > limit:
                    return True
                data = inflater.unconsumed_tail
    except zlib.error:
        return False
    return False


def _transfer_syntax(path: Path) -> tuple[UID | None, int]:
    """The file meta's transfer syntax (None if absent) and where the dataset starts."""
    meta = read_file_meta_info(path)
    group_length = int(meta.get("FileMetaInformationGroupLength", 0) or 0)
    syntax = meta.get("TransferSyntaxUID")
    return (UID(syntax) if syntax else None), 128 + 4 + 12 + group_length


def _actual_encoding(ds: Dataset) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) as the elements were read, whatever the meta says."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement):
            return bool(raw.is_implicit_VR), bool(raw.is_little_endian)
    return None


def _pixel_data_short(ds: Dataset, bulk: Bulk | None) -> bool:
    """Native (uncompressed) pixel data shorter than its image size says it must be."""
    try:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            return False
        if bulk is not None:
            length = bulk.length
        elif "PixelData" in ds:
            length = len(ds.PixelData)
        else:
            return False
        return length is not None and length < get_expected_length(ds)
    except (AttributeError, KeyError, TypeError, ValueError):
        return False  # incomplete image description: the file may still be usable


def read_file(
    path: Path, *, stream: bool = False, defer_size: int | None = None
) -> tuple[FileDataset, Bulk | None]:
    """Parse `path` as a DICOM file, or raise `Unreadable` saying why not.

    With `stream`, the pixel data is not read: the returned `Bulk` says where it
    lies (checked to fit in the file), and what follows it is parsed into the
    dataset. A deflated file, or one encoded otherwise than its transfer syntax
    says, is read whole instead (bulk None). `defer_size` leaves larger values
    unread (pydicom reads them from the file when asked).

    Whatever the lengths in the file claim, memory stays within the file's size
    (or `MAX_INFLATED` for a deflated dataset). A parse that stops before the end
    of the file, or values cut short by it, are `truncated`: pydicom quietly
    returns what it read so far.
    """
    size = path.stat().st_size
    if size == 0:
        raise Unreadable("empty-file", "zero-byte file")
    bulk = None
    in_memory = size <= IN_MEMORY
    with io.BytesIO(path.read_bytes()) if in_memory else path.open("rb") as raw:
        defer_size = None if in_memory else defer_size
        fh = BoundedReader(raw, size)
        try:
            syntax, start = _transfer_syntax(path)
            known = syntax is not None and syntax in AllTransferSyntaxes
            if syntax is not None and known and syntax.is_deflated:
                if inflated_size_exceeds(raw, start, MAX_INFLATED):
                    raise Unreadable("too-large", f"inflates to over {MAX_INFLATED} bytes")
                stream = False
                raw.seek(0)
            stream = stream and known
            ds = dcmread(fh, stop_before_pixels=stream, defer_size=defer_size)
            encoding = _actual_encoding(ds)
            if (
                stream
                and syntax is not None
                and encoding
                not in (
                    None,
                    (syntax.is_implicit_VR, syntax.is_little_endian),
                )
            ):  # the bytes we would copy do not match the header: read it all
                raw.seek(0)
                fh = BoundedReader(raw, size)
                ds, stream = dcmread(fh, defer_size=defer_size), False
            if stream and raw.tell() < size and encoding is not None:
                bulk = _locate(ds, fh, raw.tell(), size, *encoding)
        except InvalidDicomError as exc:
            raise Unreadable("not-dicom", str(exc)) from None
        except RecursionError:
            raise Unreadable("too-deep", "sequences nested too deep to parse") from None
        except Unreadable:
            raise
        except Exception as exc:  # pydicom raises many types on damaged input
            if _from_recursion(exc):
                raise Unreadable("too-deep", "sequences nested too deep to parse") from None
            raise Unreadable("unreadable", f"{type(exc).__name__}: {exc}") from None
        consumed = raw.tell()
    if consumed < size:
        raise Unreadable("truncated", f"parsing stopped at byte {consumed} of {size}")
    if consumed > size or fh.short_read or _pixel_data_short(ds, bulk):
        raise Unreadable("truncated", f"the file ends inside a value ({size} bytes)")
    return ds, bulk


def _from_recursion(exc: BaseException) -> bool:
    """Whether `exc` stands for a RecursionError: pydicom turns some into OSError."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, RecursionError):
            return True
        seen = seen.__context__
    return False


def _locate(
    ds: FileDataset, fh: BoundedReader, at: int, size: int, implicit: bool, little: bool
) -> Bulk | None:
    """The pixel data the parse stopped at; what follows it is read into `ds`."""
    try:
        bulk = locate_bulk(fh, at, size, implicit, little)  # type: ignore[arg-type]
    except BrokenBulk as exc:
        raise Unreadable("truncated", str(exc)) from None
    if bulk is None:
        fh.seek(at)
        return None
    fh.seek(bulk.end)
    if bulk.end < size:  # elements after the pixel data: padding, signatures, private
        trailer = read_dataset(fh, implicit, little)  # type: ignore[arg-type]
        for elem in trailer.values():
            ds[elem.tag] = elem
    return bulk
