"""Each PS3.15 option changes what its column of Table E.1-1 names, and nothing else.

One dataset holds every attribute of the table (with a value of its VR) plus a safe
and an unsafe private attribute; it is anonymized with the Basic Profile and with
each option, and the two results are compared attribute by attribute.
"""

from __future__ import annotations

import copy
from functools import cache

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from tasks.anonymize import anonymize
from tasks.policy import build_policy
from tasks.profile import OPTIONS, ProfileError, load_safe_private, load_table
from tasks.pseudonyms import Pseudonymizer

KEYS = Pseudonymizer(b"options-test-salt")
MARKERS = {
    0x00120063,  # DeidentificationMethod
    0x00120064,  # DeidentificationMethodCodeSequence
    0x00280303,  # LongitudinalTemporalInformationModified
}
"""Attributes every option changes: the record of what was applied."""

VALUES: dict[str, object] = {
    "AE": "ORIGINALAE",
    "AS": "045Y",
    "CS": "ORIGINAL",
    "DA": "20200315",
    "DT": "20200315101010",
    "TM": "101010",
    "DS": "1.5",
    "IS": "7",
    "LO": "Original value",
    "LT": "Original long text",
    "SH": "Original",
    "ST": "Original short text",
    "UC": "Original unlimited",
    "UT": "Original unlimited text",
    "UR": "http://example.org/original",
    "PN": "Doe^John",
    "FL": 1.5,
    "FD": 1.5,
    "SL": 7,
    "SS": 7,
    "UL": 7,
    "US": 7,
    "SV": 7,
    "UV": 7,
    "OB": b"\x01\x02",
    "OW": b"\x01\x02",
    "UN": b"\x01\x02",
}

SAFE = ("GEMS_PARM_01", 0x0043, 0x39)  # PS3.15 Table E.3.10-1: slice and b-value info
UNSAFE = ("ACME SECRETS 1.0", 0x0029, 0x10)


@cache
def every_attribute() -> Dataset:
    """A dataset with each single-attribute row of Table E.1-1 that has a plain VR."""
    ds = Dataset()
    for n, row in enumerate(load_table().rows):
        if row.match != "tag" or row.tag is None or row.tag >> 16 == 0x0002:
            continue
        if row.vr == "UI":
            ds.add_new(row.tag, "UI", f"1.2.826.0.1.3680043.99.{n}")
        elif row.vr == "SQ":
            item = Dataset()
            item.CodeMeaning = "Original meaning"
            item.UnformattedTextValue = "Original note"  # free text (ST)
            ds.add_new(row.tag, "SQ", [item])
        elif row.vr in VALUES:
            ds.add_new(row.tag, row.vr, VALUES[row.vr])
    ds.SOPClassUID = CTImageStorage
    for creator, group, element in (SAFE, UNSAFE):
        ds.private_block(group, creator, create=True).add_new(element, "IS", "12")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def anonymized(options: list[str]) -> dict[int, str]:
    ds = anonymize(copy.deepcopy(every_attribute()), build_policy(options, None), KEYS)
    return {
        int(e.tag): str([str(i) for i in e.value]) if e.VR == "SQ" else repr(e.value) for e in ds
    }


def rows_of(option: str) -> set[int]:
    return {r.tag for r in load_table().rows if r.tag is not None and option in r.options}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_changes_its_rows_and_nothing_else(option: str) -> None:
    basic, with_option = anonymized([]), anonymized([option])
    changed = {t for t in basic.keys() | with_option.keys() if basic.get(t) != with_option.get(t)}
    allowed = rows_of(option) | MARKERS
    if option == "retain-safe-private":
        allowed |= {0x00431039, 0x00430010}  # the safe element and its private creator
    assert changed - allowed == set(), sorted(f"{t:08X}" for t in changed - allowed)
    assert changed - MARKERS, f"{option} changed nothing"


def test_retain_safe_private_keeps_only_the_safe_table() -> None:
    assert SAFE in load_safe_private() and UNSAFE not in load_safe_private()
    basic, safe = anonymized([]), anonymized(["retain-safe-private"])
    assert not [t for t in basic if t >> 16 in (0x0029, 0x0043)]
    assert 0x00431039 in safe and 0x00291010 not in safe


def test_modified_dates_shift_consistently_per_patient() -> None:
    days = KEYS.date_shift_days
    ds = anonymize(
        copy.deepcopy(every_attribute()), build_policy(["retain-long-modified-dates"], None), KEYS
    )
    assert ds.StudyDate == ds.SeriesDate != "20200315"  # one offset for the whole patient
    assert -3650 <= days("some patient") <= -1
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_full_dates_keep_dates_and_say_so() -> None:
    ds = anonymize(
        copy.deepcopy(every_attribute()), build_policy(["retain-long-full-dates"], None), KEYS
    )
    assert ds.StudyDate == "20200315" and ds.StudyTime == "101010"
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_markers_name_the_options_applied() -> None:
    options = ["clean-descriptors", "retain-uids"]
    ds = anonymize(copy.deepcopy(every_attribute()), build_policy(options, None), KEYS)
    assert ds.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113110"]  # CID 7050
    assert "Clean Descriptors Option" in ds.DeidentificationMethod


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["retain-everything"], "unknown option 'retain-everything'"),
        (["retain-long-full-dates", "retain-long-modified-dates"], "choose one of"),
    ],
)
def test_bad_options_are_refused(options: list[str], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        build_policy(options, None)
