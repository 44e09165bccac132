"""Values that arrived as raw bytes, read as the VR they should have. No I/O.

An implicit VR file gives a private element no VR (pydicom then says UN), and some
senders encode a text attribute as UN or OB. Rules that rewrite a value, and the PHI
gate that looks for names in it, must see the text such bytes hold: the anonymizer
decodes them to the VR the data dictionary (or the safe-private table) gives before
any rule applies, and the gate reads what is left as text.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
"""VRs whose value is bytes by nature: nothing to decode them to."""

DEFAULT_ENCODINGS = ["iso8859"]
"""No Specific Character Set: the default repertoire (pydicom's name for it)."""

PRINTABLE = frozenset(string.printable.encode())
TEXT_SHARE = 0.9
"""Bytes of unknown meaning count as text when at least this share is printable ASCII
or above 0x7F (a character set's letters); binary data rarely is."""


def encodings(ds: Dataset, inherited: Sequence[str] | None = None) -> list[str]:
    """The Python codecs of `ds`'s Specific Character Set, else those it inherits
    (a sequence item without its own character set uses its parent's)."""
    value = ds.get("SpecificCharacterSet")
    if value:
        return list(convert_encodings(value))
    return list(inherited) if inherited else list(DEFAULT_ENCODINGS)


def is_raw(elem: DataElement) -> bool:
    """True when the value is still undecoded bytes."""
    return isinstance(elem.value, bytes | bytearray)


def decoded(
    elem: DataElement, vr: str, charsets: Sequence[str], little_endian: bool = True
) -> DataElement | None:
    """`elem`'s bytes read as `vr`; None when they are not a valid value of it.

    A sequence sent as UN is always implicit VR little endian (PS3.5 6.2.2); other
    values keep the byte order of the transfer syntax.
    """
    data = bytes(elem.value)
    raw = RawDataElement(elem.tag, vr, len(data), data, 0, True, little_endian or vr == "SQ")
    try:
        return convert_raw_data_element(raw, encoding=list(charsets))
    except Exception:  # any way bytes can fail to be a value: treat as undecodable
        return None


def looks_textual(data: bytes) -> bool:
    """True when bytes of unknown meaning are most likely text."""
    body = data.rstrip(b"\x00 ")
    if not body:
        return False
    text_like = sum(1 for b in body if b in PRINTABLE or b >= 0x80)
    return text_like / len(body) >= TEXT_SHARE


def as_text(data: bytes, charsets: Sequence[str]) -> str:
    """Bytes as text in the instance's character set; undecodable bytes replaced."""
    return decode_bytes(data.rstrip(b"\x00"), list(charsets) or DEFAULT_ENCODINGS, set())
