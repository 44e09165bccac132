"""A corpus of malformed DICOM inputs, built from pydicom's sample files by the tests.

Each `Malformed` case is a file as it could be dropped into the landing zone, the
dataset bytes a sender could put on the wire for it, and what must come of each:
the C-STORE status the receiver answers, and what autoload does with the landed
file (archived, or quarantined for a named reason).

Everything here is bytes made in memory from ``CT_small.dcm``, ``JPEG2000.dcm`` and
pydicom's ``DICOMDIR``; nothing is downloaded and no file is written.
"""

from __future__ import annotations

import copy
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    MRImageStorage,
    generate_uid,
)

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
DOES_NOT_MATCH_SOP_CLASS = 0xA900
REFUSED_IN_NEGOTIATION = -1
"""Not a status: the receiver turns the presentation context down, so no C-STORE is sent."""
NOT_SENDABLE = -2
"""Not a status: pynetdicom will not put this in a C-STORE command (a UID over 64 characters)."""

ARCHIVED = "archived"

PIXEL_DATA = 0x7FE00010
BOMB_MIB = 300
"""What the deflate bomb inflates to: more than the receiver and autoload take in."""
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}


@dataclass(frozen=True)
class Malformed:
    """One broken input and what must become of it."""

    name: str
    file: bytes
    """The file as dropped into the landing zone."""
    dataset: bytes
    """What a sender puts on the wire for it: the bytes after the file meta."""
    landing: str
    """``archived``, or the quarantine reason autoload gives."""
    status: int
    """The receiver's C-STORE status, or `REFUSED_IN_NEGOTIATION`."""
    sop_class: str = CTImageStorage
    transfer_syntax: str = ExplicitVRLittleEndian
    sop_instance: str = ""
    """The command's (and file meta's) SOP Instance UID."""

    def __str__(self) -> str:
        return self.name


# --- building blocks -------------------------------------------------------------


def uid_for(name: str) -> UID:
    """A UID of our own, the same for a case name every time."""
    return generate_uid(entropy_srcs=["dicomflow-malformed", name])


@cache
def _source(name: str) -> Dataset:
    return dcmread(get_testdata_file(name))


def sample(name: str = "CT_small.dcm", case: str = "") -> Dataset:
    """A sample file's dataset with its own instance UIDs (so cases never share one)."""
    ds = copy.deepcopy(_source(name))
    ds.SOPInstanceUID = uid_for(f"{case}/sop")
    ds.SeriesInstanceUID = uid_for(f"{case}/series")
    ds.StudyInstanceUID = uid_for(f"{case}/study")
    return ds


def body(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """`ds` encoded without file meta, as it travels in a C-STORE."""
    ts = UID(syntax)
    fp = DicomBytesIO()
    fp.is_little_endian = ts.is_little_endian
    fp.is_implicit_VR = ts.is_implicit_VR
    write_dataset(fp, ds)
    data = fp.getvalue()
    return zlib.compress(data)[2:-4] if ts.is_deflated else data


def split(ds: Dataset, tag: int, syntax: str = ExplicitVRLittleEndian) -> tuple[bytes, bytes]:
    """`ds` encoded in two parts: the elements before `tag`, and those from `tag` on."""
    before, after = Dataset(), Dataset()
    for elem in ds:
        (before if elem.tag < tag else after).add(elem)
    return body(before, syntax), body(after, syntax)


def meta(
    sop_class: str, sop_instance: str, syntax: str, *, group_length: int | None = None
) -> bytes:
    """A file meta group (after the ``DICM`` prefix)."""
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = sop_class
    fm.MediaStorageSOPInstanceUID = sop_instance
    fm.TransferSyntaxUID = syntax
    fm.ImplementationClassUID = uid_for("implementation")
    fp = DicomBytesIO()
    write_file_meta_info(fp, fm)
    data = fp.getvalue()
    if group_length is not None:
        data = data[:8] + struct.pack("<L", group_length) + data[12:]
    return data


def file(
    dataset: bytes, sop_class: str, sop_instance: str, syntax: str = ExplicitVRLittleEndian
) -> bytes:
    """A DICOM file: preamble, prefix, file meta, dataset."""
    return bytes(128) + b"DICM" + meta(sop_class, sop_instance, syntax) + dataset


def element(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little endian element; `length` overrides the value's own."""
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("latin-1")
    if vr in LONG_VRS:
        return head + b"\0\0" + struct.pack("<L", n) + value
    return head + struct.pack("<H", n & 0xFFFF) + value


def implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    n = len(value) if length is None else length
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, n) + value


ITEM = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
SEQ_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
UNDEFINED = 0xFFFFFFFF


def nested(depth: int, *, defined: bool) -> bytes:
    """A Referenced Image Sequence holding itself `depth` times, innermost with one UID."""
    inner = element(0x00081150, "UI", b"1.2.840.10008.5.1.4.1.1.2\0")
    for _ in range(depth):
        if defined:
            item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
            inner = element(0x00081140, "SQ", item)
        else:
            inner = element(0x00081140, "SQ", ITEM + inner + ITEM_END + SEQ_END, UNDEFINED)
    return inner


@dataclass(frozen=True)
class Instance:
    """A sample instance of a case, in parts that cases rearrange."""

    ds: Dataset
    sop_class: str
    sop_instance: str
    syntax: str

    def body(self) -> bytes:
        return body(self.ds, self.syntax)

    def file(self, dataset: bytes | None = None) -> bytes:
        data = self.body() if dataset is None else dataset
        return file(data, self.sop_class, self.sop_instance, self.syntax)

    def case(
        self, name: str, dataset: bytes, landing: str, status: int, *, file: bytes | None = None
    ) -> Malformed:
        return Malformed(
            name,
            self.file(dataset) if file is None else file,
            dataset,
            landing,
            status,
            self.sop_class,
            self.syntax,
            self.sop_instance,
        )


def instance(case: str, name: str = "CT_small.dcm") -> Instance:
    ds = sample(name, case)
    return Instance(
        ds, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)
    )


def _with(case: str, change: Callable[[Dataset], None], name: str = "CT_small.dcm") -> Instance:
    it = instance(case, name)
    change(it.ds)
    return it


def _insert(it: Instance, tag: int, raw: bytes) -> bytes:
    """The instance's dataset with `raw` encoded elements placed before `tag`."""
    before, after = split(it.ds, tag, it.syntax)
    return before + raw + after


# --- the corpus --------------------------------------------------------------------


def _file_level() -> list[Malformed]:
    rng = random.Random(6)
    garbage = rng.randbytes(4096)
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.randbytes(2000)
    text = b"This is not a DICOM file, just a note someone saved as .dcm\n" * 20
    cases = []
    for name, data, reason in [
        ("zero-byte", b"", "empty-file"),
        ("random-garbage", garbage, "not-dicom"),
        ("plain-text", text, "not-dicom"),
        ("jpeg-image", jpeg, "not-dicom"),
    ]:
        uid = uid_for(name)
        cases.append(Malformed(name, data, data, reason, CANNOT_UNDERSTAND, sop_instance=uid))

    it = instance("prefix-only")
    cases.append(
        it.case("prefix-only", b"", "empty-dataset", CANNOT_UNDERSTAND, file=bytes(128) + b"DICM")
    )

    it = instance("truncated-in-meta")
    cases.append(
        it.case("truncated-in-meta", it.body(), "truncated", SUCCESS, file=it.file()[:180])
    )

    it = instance("truncated-in-header")
    cut = it.body()[:900]
    cases.append(it.case("truncated-in-header", cut, "truncated", CANNOT_UNDERSTAND))

    it = instance("truncated-in-pixels")
    cut = it.body()[:-5000]
    cases.append(it.case("truncated-in-pixels", cut, "truncated", CANNOT_UNDERSTAND))

    it = instance("truncated-by-one-byte")
    cut = it.body()[:-1]
    cases.append(it.case("truncated-by-one-byte", cut, "truncated", CANNOT_UNDERSTAND))

    it = instance("trailing-garbage")
    data = it.body() + rng.randbytes(301)
    cases.append(it.case("trailing-garbage", data, "truncated", CANNOT_UNDERSTAND))

    it = instance("no-file-meta")
    cases.append(it.case("no-file-meta", it.body(), "not-dicom", SUCCESS, file=it.body()))

    it = instance("no-dicm-prefix")
    data = bytes(128) + meta(it.sop_class, it.sop_instance, it.syntax) + it.body()
    cases.append(it.case("no-dicm-prefix", it.body(), "not-dicom", SUCCESS, file=data))

    it = instance("meta-group-length-huge")
    data = (
        bytes(128)
        + b"DICM"
        + meta(it.sop_class, it.sop_instance, it.syntax, group_length=0x7FFFFFF0)
    )
    cases.append(
        it.case("meta-group-length-huge", it.body(), ARCHIVED, SUCCESS, file=data + it.body())
    )

    it = instance("meta-without-transfer-syntax")
    raw = meta(it.sop_class, it.sop_instance, it.syntax)
    ts_at = raw.index(b"\x02\x00\x10\x00UI")
    ts_len = struct.unpack("<H", raw[ts_at + 6 : ts_at + 8])[0]
    stripped = raw[12:ts_at] + raw[ts_at + 8 + ts_len :]
    group = element(0x00020000, "UL", struct.pack("<L", len(stripped)))
    data = bytes(128) + b"DICM" + group + stripped + it.body()
    cases.append(
        it.case("meta-without-transfer-syntax", it.body(), "no-transfer-syntax", SUCCESS, file=data)
    )

    it = instance("meta-unknown-transfer-syntax")
    data = file(it.body(), it.sop_class, it.sop_instance, "1.2.826.0.1.3680043.8.498.1.999")
    cases.append(
        Malformed(
            "meta-unknown-transfer-syntax",
            data,
            it.body(),
            "unknown-transfer-syntax",
            REFUSED_IN_NEGOTIATION,
            it.sop_class,
            "1.2.826.0.1.3680043.8.498.1.999",
            it.sop_instance,
        )
    )

    it = instance("meta-says-implicit-data-explicit")
    data = file(it.body(), it.sop_class, it.sop_instance, ImplicitVRLittleEndian)
    cases.append(
        Malformed(
            "meta-says-implicit-data-explicit",
            data,
            it.body(),
            ARCHIVED,
            SUCCESS,
            it.sop_class,
            ImplicitVRLittleEndian,
            it.sop_instance,
        )
    )

    it = instance("meta-says-big-endian-data-little")
    data = file(it.body(), it.sop_class, it.sop_instance, ExplicitVRBigEndian)
    cases.append(
        Malformed(
            "meta-says-big-endian-data-little",
            data,
            it.body(),
            "truncated",
            CANNOT_UNDERSTAND,
            it.sop_class,
            ExplicitVRBigEndian,
            it.sop_instance,
        )
    )

    it = instance("deflate-stream-corrupt")
    good = body(it.ds, DeflatedExplicitVRLittleEndian)
    bad = good[:40] + rng.randbytes(len(good) - 40)
    data = file(bad, it.sop_class, it.sop_instance, DeflatedExplicitVRLittleEndian)
    cases.append(
        Malformed(
            "deflate-stream-corrupt",
            data,
            bad,
            "unreadable",
            CANNOT_UNDERSTAND,
            it.sop_class,
            DeflatedExplicitVRLittleEndian,
            it.sop_instance,
        )
    )

    it = instance("deflate-bomb")
    before, after = split(it.ds, 0x00291010)
    squeeze = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [squeeze.compress(before + element(0x00291010, "OB", b"", length=BOMB_MIB << 20))]
    parts += [squeeze.compress(zeros) for _ in range(BOMB_MIB)]
    bomb = b"".join([*parts, squeeze.compress(after), squeeze.flush()])
    data = file(bomb, it.sop_class, it.sop_instance, DeflatedExplicitVRLittleEndian)
    cases.append(
        Malformed(
            "deflate-bomb",
            data,
            bomb,
            "too-large",
            CANNOT_UNDERSTAND,
            it.sop_class,
            DeflatedExplicitVRLittleEndian,
            it.sop_instance,
        )
    )

    dicomdir = dcmread(get_testdata_file("DICOMDIR"))
    dicomdir_body = body(dicomdir, ExplicitVRLittleEndian)
    uid = str(dicomdir.file_meta.MediaStorageSOPInstanceUID)
    cases.append(
        Malformed(
            "dicomdir",
            file(dicomdir_body, MediaStorageDirectoryStorage, uid),
            dicomdir_body,
            "dicomdir",
            REFUSED_IN_NEGOTIATION,
            MediaStorageDirectoryStorage,
            ExplicitVRLittleEndian,
            uid,
        )
    )
    return cases


def _element_level() -> list[Malformed]:
    cases = []

    it = instance("unknown-vr-code")
    raw = element(0x00081030, "ZZ", b"odd\0")  # StudyDescription with a VR that does not exist
    cases.append(it.case("unknown-vr-code", _insert(it, 0x00081030, raw), ARCHIVED, SUCCESS))

    it = instance("vr-bytes-not-letters")
    raw = struct.pack("<HH", 0x0008, 0x1030) + b"\x01\x02" + struct.pack("<H", 4) + b"odd\0"
    cases.append(
        it.case(
            "vr-bytes-not-letters", _insert(it, 0x00081030, raw), "truncated", CANNOT_UNDERSTAND
        )
    )

    it = _with("patient-name-as-us", lambda ds: ds.pop(0x00100010))
    raw = element(0x00100010, "US", struct.pack("<H", 4711))
    cases.append(
        it.case("patient-name-as-us", _insert(it, 0x00100010, raw), "processing-error", SUCCESS)
    )

    it = _with("study-uid-as-ob", lambda ds: ds.pop(0x0020000D))
    raw = element(0x0020000D, "OB", b"\x01\x02\x03\x04\xfe\xff")
    cases.append(it.case("study-uid-as-ob", _insert(it, 0x0020000D, raw), "invalid-uid", SUCCESS))

    it = _with("number-of-frames-not-a-number", lambda ds: None)
    raw = element(0x00280008, "IS", b"abc ")
    cases.append(
        it.case("number-of-frames-not-a-number", _insert(it, 0x00280008, raw), ARCHIVED, SUCCESS)
    )

    it = instance("length-past-the-end")
    raw = element(0xFFFCFFFC, "OB", b"\0" * 16, length=1 << 20)  # trailing padding, cut short
    cases.append(it.case("length-past-the-end", it.body() + raw, "truncated", CANNOT_UNDERSTAND))

    it = instance("huge-length-in-header")
    raw = element(0x00081030, "UT", b"tail" * 50, length=0xFFFFFFF0)
    cut = split(it.ds, 0x00081030)[0] + raw
    cases.append(it.case("huge-length-in-header", cut, "truncated", CANNOT_UNDERSTAND))

    it = instance("huge-private-length")
    raw = element(0x00291010, "OB", b"\0" * 64, length=0xFFFFFFF0)
    cut = split(it.ds, 0x00291010)[0] + raw
    cases.append(it.case("huge-private-length", cut, "truncated", CANNOT_UNDERSTAND))

    it = instance("huge-pixel-data-length")
    raw = element(PIXEL_DATA, "OW", b"\0" * 4096, length=0xFFFFFFF0)
    cut = split(it.ds, PIXEL_DATA)[0] + raw
    cases.append(it.case("huge-pixel-data-length", cut, "truncated", CANNOT_UNDERSTAND))

    it = instance("pixel-data-shorter-than-image")
    it.ds.Rows = it.ds.Columns = 4096  # says 32 MiB of pixels; holds 32 KiB
    cases.append(
        it.case("pixel-data-shorter-than-image", it.body(), "truncated", CANNOT_UNDERSTAND)
    )

    it = instance("sequence-never-ends")
    raw = element(0x00081140, "SQ", ITEM + element(0x00081150, "UI", b"1.2.3\0"), UNDEFINED)
    cut = split(it.ds, 0x00081140)[0] + raw  # no item or sequence delimiter: runs to the end
    cases.append(it.case("sequence-never-ends", cut, "unreadable", CANNOT_UNDERSTAND))

    it = instance("item-never-ends")
    raw = element(
        0x00081140, "SQ", ITEM + element(0x00081150, "UI", b"1.2.3\0") + SEQ_END, UNDEFINED
    )
    cases.append(
        it.case("item-never-ends", _insert(it, 0x00081140, raw), "unreadable", CANNOT_UNDERSTAND)
    )

    it = instance("text-of-undefined-length")
    raw = element(0x00081030, "UT", b"no delimiter follows", UNDEFINED)
    cut = split(it.ds, 0x00081030)[0] + raw
    cases.append(it.case("text-of-undefined-length", cut, "truncated", CANNOT_UNDERSTAND))

    for depth, defined in ((300, False), (300, True), (1000, True)):
        name = f"sequences-nested-{depth}-{'defined' if defined else 'undefined'}-length"
        it = instance(name)
        data = _insert(it, 0x00081140, nested(depth, defined=defined))
        status = SUCCESS if defined else CANNOT_UNDERSTAND
        cases.append(it.case(name, data, "too-deep", status))

    it = instance("sequences-nested-40")
    cases.append(
        it.case(
            "sequences-nested-40",
            _insert(it, 0x00081140, nested(40, defined=False)),
            ARCHIVED,
            SUCCESS,
        )
    )

    it = instance("item-with-wrong-tag")
    bad_item = struct.pack("<HHL", 0xFFFE, 0xE0DD, 8) + element(0x00081150, "UI", b"1.2\0")
    raw = element(0x00081140, "SQ", bad_item)
    cases.append(it.case("item-with-wrong-tag", _insert(it, 0x00081140, raw), ARCHIVED, SUCCESS))

    it = instance("duplicate-element")
    raw = element(0x00081030, "LO", b"FIRST COPY")
    cases.append(
        it.case("duplicate-element", _insert(it, 0x00081030, raw + raw), ARCHIVED, SUCCESS)
    )

    it = instance("elements-out-of-order")
    late = element(0x00080060, "CS", b"CT")  # Modality after Patient's Name
    data = _insert(it, 0x00100020, late)
    it.ds.pop(0x00080060)
    data = _insert(it, 0x00100020, late)
    cases.append(it.case("elements-out-of-order", data, ARCHIVED, SUCCESS))

    it = _with(
        "unknown-character-set", lambda ds: setattr(ds, "SpecificCharacterSet", "ISO_IR 999")
    )
    cases.append(it.case("unknown-character-set", it.body(), ARCHIVED, SUCCESS))

    it = _with("only-two-elements", lambda ds: None)
    small = Dataset()
    small.SOPClassUID, small.SOPInstanceUID = it.sop_class, it.sop_instance
    cases.append(it.case("only-two-elements", body(small), "empty-dataset", SUCCESS))
    return cases


def _uid_level() -> list[Malformed]:
    cases = []
    for name, value, status in [
        ("instance-uid-with-letters", "1.2.abc.4", SUCCESS),
        ("instance-uid-too-long", "1.2." + "3" * 120, NOT_SENDABLE),
        ("instance-uid-with-spaces", "1.2 3.4", SUCCESS),
    ]:
        it = instance(name)
        it.ds.SOPInstanceUID = value
        it = Instance(it.ds, it.sop_class, value, it.syntax)
        cases.append(it.case(name, it.body(), ARCHIVED, status))

    it = _with("no-sop-instance-uid", lambda ds: ds.pop(0x00080018))
    cases.append(it.case("no-sop-instance-uid", it.body(), "missing-uid", CANNOT_UNDERSTAND))

    it = _with("no-study-uid", lambda ds: ds.pop(0x0020000D))
    cases.append(it.case("no-study-uid", it.body(), "missing-uid", SUCCESS))

    it = _with("empty-sop-class-uid", lambda ds: setattr(ds, "SOPClassUID", ""))
    cases.append(it.case("empty-sop-class-uid", it.body(), "missing-uid", CANNOT_UNDERSTAND))

    it = _with(
        "sop-class-not-the-negotiated-one", lambda ds: setattr(ds, "SOPClassUID", MRImageStorage)
    )
    cases.append(
        it.case("sop-class-not-the-negotiated-one", it.body(), ARCHIVED, DOES_NOT_MATCH_SOP_CLASS)
    )

    it = instance("sop-instance-not-the-commands")
    other = uid_for("sop-instance-not-the-commands/other")
    it = Instance(it.ds, it.sop_class, other, it.syntax)
    cases.append(
        it.case("sop-instance-not-the-commands", it.body(), ARCHIVED, DOES_NOT_MATCH_SOP_CLASS)
    )

    it = instance("encapsulated-without-delimiter", "JPEG2000.dcm")
    data = it.body()
    assert data.endswith(SEQ_END)
    cut = data[: -len(SEQ_END)]
    cases.append(it.case("encapsulated-without-delimiter", cut, "truncated", CANNOT_UNDERSTAND))

    it = instance("encapsulated-item-with-wrong-tag", "JPEG2000.dcm")
    data = bytearray(it.body())
    at = data.rindex(struct.pack("<HH", 0xFFFE, 0xE000))  # the last fragment's item tag
    data[at : at + 4] = struct.pack("<HH", 0x0008, 0x0008)
    cases.append(
        it.case("encapsulated-item-with-wrong-tag", bytes(data), "truncated", CANNOT_UNDERSTAND)
    )
    return cases


@cache
def corpus() -> tuple[Malformed, ...]:
    """Every case, each named uniquely."""
    cases = _file_level() + _element_level() + _uid_level()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return tuple(cases)
