"""C-FIND as SCU: identifiers built from DICOM keywords, responses read per PS3.4 C.4.1.

Keys are given as ``Keyword=value`` (or a tag, ``(0010,0020)=value``); the value is
passed on in DICOM's matching syntax: ``*`` and ``?`` wildcards, ``A-B`` ranges for
dates and times, ``\\``-separated UID lists. A key without ``=value`` is a return key.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pynetdicom.status import QR_FIND_SERVICE_CLASS_STATUS, code_to_category

from receiver.scu import AssociationLost, Peer, ScuError, associate

Root = Literal["patient", "study"]
Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]

ROOTS: tuple[Root, ...] = ("patient", "study")
LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")

FIND_MODELS: dict[Root, UID] = {
    "patient": UID("1.2.840.10008.5.1.4.1.2.1.1"),  # Patient Root Q/R Information Model - FIND
    "study": UID("1.2.840.10008.5.1.4.1.2.2.1"),  # Study Root Q/R Information Model - FIND
}
MOVE_MODELS: dict[Root, UID] = {
    "patient": UID("1.2.840.10008.5.1.4.1.2.1.2"),  # Patient Root Q/R Information Model - MOVE
    "study": UID("1.2.840.10008.5.1.4.1.2.2.2"),  # Study Root Q/R Information Model - MOVE
}

UNIQUE_KEYS: dict[Level, str] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
"""The unique key of each level (PS3.4 C.6.1.1 and C.6.2.1)."""

RETURN_KEYS: dict[Level, tuple[str, ...]] = {
    "PATIENT": (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfPatientRelatedStudies",
    ),
    "STUDY": (
        "PatientID",
        "PatientName",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "SERIES": (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ),
    "IMAGE": (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
    ),
}
"""Keys asked for by default at each level, so a result says what it found."""

RANGE_VRS = frozenset({"DA", "TM", "DT"})
DATE_VALUE = re.compile(r"^\d{8}$")
TAG_TEXT = re.compile(r"^\(?([0-9A-Fa-f]{4}),?\s*([0-9A-Fa-f]{4})\)?$")


class QueryError(ScuError):
    """A query that cannot be asked as given, or that the node answered with a failure."""


def status_meaning(code: int, table: Mapping[int, tuple[str, str]]) -> str:
    """``0xA700 Failure: Out of Resources`` from pynetdicom's status tables."""
    category, text = table.get(code, (code_to_category(code), ""))
    return f"0x{code:04X} {category}" + (f": {text}" if text else "")


def keyword_of(name: str) -> str:
    """A DICOM keyword from a keyword or a tag; raises `QueryError` for anything else."""
    name = name.strip()
    match = TAG_TEXT.match(name)
    if match:
        keyword = keyword_for_tag(int(match[1] + match[2], 16))
        if not keyword:
            raise QueryError(f"{name}: not a tag of the data dictionary")
        return str(keyword)
    if tag_for_keyword(name) is None:
        raise QueryError(f"{name}: not a DICOM keyword or a tag such as (0010,0020)")
    return name


def _check_value(keyword: str, vr: str, value: str) -> None:
    """Refuse values that no matching rule of PS3.4 C.2.2.2 could mean."""
    if vr == "SQ":
        raise QueryError(f"{keyword}: sequence matching is not supported as a key option")
    if vr == "DA" and value and "*" not in value and "?" not in value:
        for part in value.split("-") if "-" in value else [value]:
            if part and not DATE_VALUE.match(part):
                raise QueryError(
                    f"{keyword}={value}: a date is YYYYMMDD, a range YYYYMMDD-YYYYMMDD "
                    "(either end may be left open)"
                )
        if value.count("-") > 1 or value == "-":
            raise QueryError(f"{keyword}={value}: one range, YYYYMMDD-YYYYMMDD")
    if vr == "UI" and value:
        for uid in value.split("\\"):
            if not UID(uid).is_valid:
                raise QueryError(f"{keyword}: {uid!r} is not a valid UID")


def parse_keys(items: Iterable[str]) -> dict[str, str]:
    """``["PatientID=12*", "StudyDate"]`` -> ``{"PatientID": "12*", "StudyDate": ""}``."""
    keys: dict[str, str] = {}
    for item in items:
        name, _, value = item.partition("=")
        keyword = keyword_of(name)
        _check_value(keyword, str(dictionary_VR(keyword)), value)
        keys[keyword] = value
    return keys


def build_identifier(root: Root, level: Level, keys: Mapping[str, str]) -> Dataset:
    """The C-FIND identifier for `level` in the `root` model, default return keys included.

    Checks the hierarchical rule of PS3.4 C.4.1.3.1: every level above the one
    asked needs its unique key with one value (Patient ID above STUDY in the
    Patient Root model, the Study UID above SERIES, the Series UID above IMAGE).
    """
    if root not in ROOTS:
        raise QueryError(f"unknown information model {root!r}: patient or study")
    if level not in LEVELS:
        raise QueryError(f"unknown level {level!r}: PATIENT, STUDY, SERIES or IMAGE")
    if root == "study" and level == "PATIENT":
        raise QueryError("the Study Root model has no PATIENT level: use --root patient")
    first = 0 if root == "patient" else 1
    for above in LEVELS[first : LEVELS.index(level)]:
        unique = UNIQUE_KEYS[above]
        value = keys.get(unique, "")
        if not value or any(c in value for c in "*?\\"):
            raise QueryError(
                f"a {level} query in the {root} root model needs -k {unique}=<one value>"
            )
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in RETURN_KEYS[level]:
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@dataclass
class FindResult:
    """What a C-FIND returned: the matches, and how it ended."""

    matches: list[Dataset]
    status: int
    meaning: str

    @property
    def cancelled(self) -> bool:
        return code_to_category(self.status) == "Cancel"


def find(
    peer: Peer,
    root: Root,
    identifier: Dataset,
    cancel: threading.Event | None = None,
    on_match: Callable[[Dataset], None] | None = None,
    message_id: int = 1,
) -> FindResult:
    """C-FIND `identifier` at `peer`; all matches, or a `QueryError` for a failure.

    `cancel`, once set, sends one C-CANCEL; the matches so far are returned with
    the node's Cancel status. A lost association raises `AssociationLost`.
    """
    model = FIND_MODELS[root]
    matches: list[Dataset] = []
    cancelled = False
    with associate(peer, [model]) as assoc:
        for status, match in assoc.send_c_find(identifier, model, msg_id=message_id):
            if "Status" not in status:
                raise AssociationLost(
                    f"{peer.describe()} stopped answering the C-FIND "
                    f"(aborted, or no response within {peer.scu.dimse_timeout:g} s)"
                )
            code = int(status.Status)
            category = code_to_category(code)
            if category == "Pending":
                if match is not None:
                    matches.append(match)
                    if on_match is not None:
                        on_match(match)
                if cancel is not None and cancel.is_set() and not cancelled:
                    assoc.send_c_cancel(message_id, query_model=model)
                    cancelled = True
                continue
            meaning = status_meaning(code, QR_FIND_SERVICE_CLASS_STATUS)
            if category in ("Success", "Cancel", "Warning"):
                return FindResult(matches, code, meaning)
            comment = str(status.get("ErrorComment", "") or "").strip()
            raise QueryError(
                f"{peer.describe()} answered the C-FIND with {meaning}"
                + (f" ({comment})" if comment else "")
            )
    raise AssociationLost(f"{peer.describe()} ended the C-FIND without a final status")


def as_row(ds: Dataset, keywords: Iterable[str]) -> dict[str, str | None]:
    """One printable row of a match: each keyword's value as text (None when absent)."""
    row: dict[str, str | None] = {}
    for keyword in keywords:
        value = ds.get(keyword)
        if value is None:
            row[keyword] = None
        elif isinstance(value, MultiValue):
            row[keyword] = "\\".join(str(v) for v in value)
        else:
            row[keyword] = str(value)
    return row
