"""A last check after anonymization: no original identifying value may remain.

The rules decide what to change; this gate does not trust them. It collects the
instance's identifying values before anonymization and looks for them in every text
element of the result, at any depth. A hit sends the instance to quarantine.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from tasks.replacements import DUMMY

IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "AccessionNumber",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "PatientBirthDate",
    "PatientTelecomInformation",
    "ResponsiblePerson",
)
"""Values that identify the patient wherever they turn up (PS3.15 E.1-1: D, Z or X)."""

TEXT_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
"""Where people write text. Not UIDs (ours by now), numbers, dates or code strings,
whose digits and defined terms would match IDs and name parts by chance."""

MIN_TOKEN = 3
"""Name parts shorter than this (initials, 'MR') are too common to be evidence."""

MIN_IDEOGRAPHIC = 2
"""Chinese, Japanese and Korean names: two characters already make a family or given
name, and such text has no spaces between words, so these parts match anywhere."""

IDEOGRAPHIC_START = 0x2E80
"""From here on Unicode holds the CJK radicals, kana, ideographs and Hangul."""

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)

OURS = frozenset(str(value).upper() for value in DUMMY.values())
"""Values we write ourselves ('ANONYMIZED'): a patient already called that is no leak."""


class PhiFound(Exception):
    """An original identifying value is still in the anonymized dataset."""

    def __init__(self, keyword: str) -> None:
        super().__init__(f"{keyword or 'an element'} still holds an original identifying value")
        self.keyword = keyword


def _values(ds: Dataset, keywords: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(keyword, value) for each value of those attributes, at any depth, in one pass."""
    wanted = {tag_for_keyword(k): k for k in keywords}
    for elem in ds.iterall():
        keyword = wanted.get(elem.tag)
        if keyword and elem.value not in (None, ""):
            values = elem.value if elem.VM > 1 else [elem.value]
            yield from ((keyword, str(v).strip()) for v in values)


def originals(
    ds: Dataset, keywords: tuple[str, ...] = IDENTIFYING_KEYWORDS
) -> tuple[frozenset[str], frozenset[str]]:
    """Whole identifying values, and the name parts among them, as they arrived.

    `keywords` leaves out what a site's rules keep on purpose.
    """
    whole: set[str] = set()
    parts: set[str] = set()
    for keyword, value in _values(ds, keywords):
        if len(value) >= MIN_TOKEN:
            whole.add(value.upper())
        if "Name" not in keyword:
            continue
        for token in _TOKEN.findall(value):
            if ord(max(token)) >= IDEOGRAPHIC_START:
                if len(token) >= MIN_IDEOGRAPHIC:
                    whole.add(token)
            elif len(token) >= MIN_TOKEN:
                parts.add(token.upper())
    return frozenset(whole - OURS), frozenset(parts - OURS)


def check(
    ds: Dataset, whole: frozenset[str], parts: frozenset[str], ours: frozenset[str] = frozenset()
) -> None:
    """Raise `PhiFound` if a text value of `ds` (or its file meta) holds an original value.

    Whole values match anywhere inside a text; name parts match whole words only, so
    a surname does not flag every word it happens to be part of. Values in `ours` are
    what the anonymizer wrote itself (method markers, a site's fixed replacements)
    and are not searched: a patient called Hospital is not in 'Research Hospital'.
    """
    if not whole and not parts:
        return
    elements = list(ds.iterall())
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        elements.extend(meta)
    for elem in elements:
        if elem.VR not in TEXT_VRS or elem.value in (None, ""):
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        for value in values:
            text = str(value).strip(" \x00")
            if text in ours:
                continue
            text = text.upper()
            if any(w in text for w in whole) or parts.intersection(_TOKEN.findall(text)):
                raise PhiFound(elem.keyword)
