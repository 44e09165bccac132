"""New values for one element, by VR: dummies, cleaned text, shifted dates. No I/O."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable

from pydicom.valuerep import MAX_VALUE_LEN

DUMMY_TEXT = "ANONYMIZED"
DUMMY: dict[str, object] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "PN": DUMMY_TEXT,
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "UR": "urn:anonymized",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
}
"""PS3.15 D: a non-empty value that is valid for the VR and means nothing.
VRs missing here (binary, AT) get an empty value instead."""

REDACTED = "***"
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def max_length(vr: str) -> int:
    """The longest value the VR allows (long text VRs: effectively unlimited)."""
    return MAX_VALUE_LEN.get(vr, 64 if vr == "PN" else 1 << 20)


def dummy(vr: str) -> object:
    """The D value for `vr`, or None (empty) where no harmless value exists."""
    return DUMMY.get(vr)


def fold(text: str) -> str:
    """`text` as compared with identifying values: NFC-normalized and case-folded, so
    that a decomposed 'Zoe\u0308' is 'zoë' and 'STRAUSS' matches 'Strauß'."""
    return unicodedata.normalize("NFC", text).casefold()


def _folded(text: str) -> tuple[str, list[int]]:
    """`fold` of NFC `text`, with the index in `text` of each folded character (folding
    can lengthen a character: 'ß' is 'ss')."""
    folded: list[str] = []
    index: list[int] = []
    for i, char in enumerate(text):
        f = char.casefold()
        folded.append(f)
        index.extend([i] * len(f))
    return "".join(folded), index


def clean_text(text: str, whole: Iterable[str], parts: Iterable[str], vr: str) -> str:
    """`text` with every identifying value in it replaced by ``***`` (PS3.15 C).

    `whole` and `parts` are `fold`-ed. Whole values match anywhere, name parts as
    whole words; the text is compared folded, so case and Unicode normalization do
    not hide a name.
    """
    text = unicodedata.normalize("NFC", text)
    folded, index = _folded(text)
    spans: list[tuple[int, int]] = []
    for value in {v for v in whole if v}:
        start = folded.find(value)
        while start >= 0:
            spans.append((index[start], index[start + len(value) - 1] + 1))
            start = folded.find(value, start + len(value))
    found = frozenset(parts)
    spans += [m.span() for m in _WORD.finditer(text) if fold(m[0]) in found]
    cleaned, end = [], 0
    for start, stop in sorted(spans):
        if stop <= end:
            continue
        if start >= end:
            cleaned.append(text[end:start])
            cleaned.append(REDACTED)
        end = stop
    cleaned.append(text[end:])
    return "".join(cleaned)[: max_length(vr)]


def shift_date(value: str, vr: str, days: int) -> str | None:
    """A DA or DT value moved by `days`; None when it is not a full date to move."""
    text = value.strip()
    try:
        day = dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None
    if vr == "DA" and len(text) != 8:
        return None
    return (day + dt.timedelta(days=days)).strftime("%Y%m%d") + text[8:]
