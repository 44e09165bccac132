"""A last check after anonymization: no original identifying value may remain.

The rules decide what to change; this gate does not trust them. It collects the
instance's identifying values before anonymization and looks for them in every text
element of the result, at any depth. A hit sends the instance to quarantine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from pydicom.datadict import DicomDictionary, dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from tasks import decode
from tasks.pseudonyms import PSEUDONYM_PREFIX
from tasks.replacements import DUMMY, fold

PERSON_NAME_KEYWORDS = tuple(
    sorted(keyword for vr, _, _, _, keyword in DicomDictionary.values() if vr == "PN" and keyword)
)
"""Every person name attribute of the data dictionary: the patient's and the relatives',
and the staff's (operators, physicians, observers), who are identifying too."""

IDENTIFYING_KEYWORDS = tuple(
    dict.fromkeys(
        (
            "PatientName",
            "PatientID",
            "OtherPatientIDs",
            "OtherPatientNames",
            "PatientBirthName",
            "PatientMotherBirthName",
            "AccessionNumber",
            "AdmissionID",
            "ServiceEpisodeID",
            "RequestedProcedureID",
            "PlacerOrderNumberImagingServiceRequest",
            "FillerOrderNumberImagingServiceRequest",
            "PatientAddress",
            "PatientTelephoneNumbers",
            "MedicalRecordLocator",
            "PatientBirthDate",
            "PatientTelecomInformation",
            "ResponsiblePerson",
            *PERSON_NAME_KEYWORDS,
        )
    )
)
"""Values that identify the patient wherever they turn up (PS3.15 E.1-1: D, Z or X):
names of anyone the instance names, the patient's IDs and the IDs that lead to them
(accession, admission, order numbers), birth date, address, phones."""

NAME_KEYWORDS = frozenset(PERSON_NAME_KEYWORDS)

GATE_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
"""Where people write text, code strings included (a device writes what it likes there).
Not UIDs (ours by now), numbers or dates, whose digits would match IDs by chance."""

MIN_TOKEN = 3
"""Name parts shorter than this (initials, 'MR') are too common to be evidence."""

MIN_DIGITS = 5
"""Numbers shorter than this (series numbers, doses, years) turn up by chance; longer
digit runs that equal an ID are evidence wherever they are."""

MIN_IDEOGRAPHIC = 2
"""Chinese, Japanese and Korean names: two characters already make a family or given
name, and such text has no spaces between words, so these parts match anywhere."""

IDEOGRAPHIC_START = 0x2E80
"""From here on Unicode holds the CJK radicals, kana, ideographs and Hangul."""

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_COMPONENTS = re.compile(r"[\^=\s]+")
_NOT_DIGIT = re.compile(r"\D+")
_DIGITS = re.compile(r"\d+")


OURS = frozenset(fold(str(value)) for value in DUMMY.values()) | {
    fold(PSEUDONYM_PREFIX.strip("-"))
}
"""Values we write ourselves ('ANONYMIZED', the 'ANON' of a pseudonym): a patient already
called that (data we anonymized before, sent again) is no leak."""


class PhiFound(Exception):
    """An original identifying value is still in the anonymized dataset."""

    def __init__(self, keyword: str) -> None:
        super().__init__(f"{keyword or 'an element'} still holds an original identifying value")
        self.keyword = keyword


def _values(ds: Dataset, keywords: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(keyword, value) for each value of those attributes, at any depth, in one pass."""
    wanted = {tag_for_keyword(k): k for k in keywords}
    charsets = decode.encodings(ds)
    for elem in ds.iterall():
        keyword = wanted.get(elem.tag)
        if keyword and elem.value not in (None, ""):
            if decode.is_raw(elem):  # sent as UN or OB: the text is in the bytes
                values: Iterable[object] = [decode.as_text(bytes(elem.value), charsets)]
            else:
                values = elem.value if elem.VM > 1 else [elem.value]
            yield from ((keyword, str(v).strip(" \x00")) for v in values)


def birth_date_spellings(value: str) -> set[str]:
    """A birth date as people write it in text: 1961-07-04, 04.07.1961, 1961/07/04,
    04/07/1961, 07/04/1961 (and the DA form itself)."""
    digits = _NOT_DIGIT.sub("", value)
    if len(digits) != 8:
        return set()
    y, m, d = digits[:4], digits[4:6], digits[6:]
    return {digits, f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{y}/{m}/{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}"}


def _name(value: str, whole: set[str], parts: set[str]) -> None:
    """A person's name: the whole value, each part, and each component with its
    punctuation dropped ("O'Brien" is also written OBrien, "Smith-Jones" SmithJones)."""
    if len(value) >= MIN_TOKEN:
        whole.add(value)
    tokens = _TOKEN.findall(value)
    joined = ["".join(_TOKEN.findall(c)) for c in _COMPONENTS.split(value)]
    for token in {*tokens, *joined}:
        if ord(max(token, default="\0")) >= IDEOGRAPHIC_START:
            if len(token) >= MIN_IDEOGRAPHIC:
                whole.add(token)
        elif len(token) >= MIN_TOKEN:
            parts.add(token)


def _identifier(keyword: str, value: str, whole: set[str]) -> None:
    """An ID, address, phone or date: the value, and the digits of a value made of
    digits and punctuation only (a phone, an ID written 123-45-678)."""
    if keyword == "PatientBirthDate":
        whole.update(birth_date_spellings(value))
    if value.isdigit():
        if len(value) >= MIN_DIGITS:
            whole.add(value)
        return
    if len(value) >= MIN_TOKEN:
        whole.add(value)
    digits = _NOT_DIGIT.sub("", value)
    if len(digits) >= MIN_DIGITS and not any(c.isalpha() for c in value):
        whole.add(digits)


def originals(
    ds: Dataset, keywords: tuple[str, ...] = IDENTIFYING_KEYWORDS
) -> tuple[frozenset[str], frozenset[str]]:
    """Whole identifying values, and the name parts among them, as they arrived, each
    `fold`-ed for comparison.

    `keywords` leaves out what a site's rules keep on purpose.
    """
    whole: set[str] = set()
    parts: set[str] = set()
    for keyword, value in _values(ds, keywords):
        value = fold(value)
        if keyword in NAME_KEYWORDS:
            _name(value, whole, parts)
        else:
            _identifier(keyword, value, whole)
    return frozenset(whole - OURS), frozenset(parts - OURS)


def _bounded(value: str) -> str:
    """A pattern for `value` as a word of its own; Chinese, Japanese and Korean names
    anywhere, since such text has no spaces between words."""
    if ord(max(value)) >= IDEOGRAPHIC_START:
        return re.escape(value)
    return rf"(?<![^\W_]){re.escape(value)}(?![^\W_])"


def _searched_vr(elem: DataElement) -> str:
    """The VR whose values the gate reads for `elem`: the dictionary's for a public
    element sent as bytes, else the encoded one."""
    if decode.is_raw(elem) and not elem.tag.is_private:
        try:
            vr = str(dictionary_VR(elem.tag))
        except KeyError:
            return "UN"
        return vr if " or " not in vr else "OB"
    return str(elem.VR)


def texts(elem: DataElement, charsets: list[str]) -> list[str]:
    """The text the gate searches in `elem`: each value of a text or code string
    element, and the bytes of one sent as UN or OB that is text by the dictionary (or,
    private or unknown, looks like text), decoded."""
    if elem.value in (None, "", b""):
        return []
    vr = _searched_vr(elem)
    if decode.is_raw(elem):
        data = bytes(elem.value)
        textual = vr in GATE_VRS or (vr == "UN" and decode.looks_textual(data))
        return decode.as_text(data, charsets).split("\\") if textual else []
    if vr not in GATE_VRS:
        return []
    values = elem.value if elem.VM > 1 else [elem.value]
    return [str(v) for v in values]


def check(
    ds: Dataset, whole: frozenset[str], parts: frozenset[str], ours: frozenset[str] = frozenset()
) -> None:
    """Raise `PhiFound` if a text value of `ds` (or its file meta) holds an original value.

    Whole values and name parts match as words of their own (or a run of five digits
    or more equal to an ID), so a surname or an ID does not flag every word it happens
    to be part of; code strings are searched too, and text sent as bytes decoded.
    Values in `ours` are what the anonymizer wrote itself (method markers, a site's
    fixed replacements) and are not searched: a patient called Hospital is not in
    'Research Hospital'.
    """
    if not whole and not parts:
        return
    pattern = (
        re.compile("|".join(_bounded(w) for w in sorted(whole, key=len, reverse=True)))
        if whole
        else None
    )
    charsets = decode.encodings(ds)
    elements = list(ds.iterall())
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        elements.extend(meta)
    for elem in elements:
        for value in texts(elem, charsets):
            text = value.strip(" \x00")
            if not text or text in ours:
                continue
            text = fold(text)
            if (
                (pattern is not None and pattern.search(text))
                or parts.intersection(_TOKEN.findall(text))
                or any(len(run) >= MIN_DIGITS and run in whole for run in _DIGITS.findall(text))
            ):
                raise PhiFound(elem.keyword)
