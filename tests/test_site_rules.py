"""Site rules on top of the profile: each action, private creators, errors naming the line."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tasks.anonymize import anonymize
from tasks.archive import encode
from tasks.policy import build_policy
from tasks.pseudonyms import Pseudonymizer
from tasks.rules import RulesError, load_rules, parse_rules

KEYS = Pseudonymizer(b"site-rules-salt")

SITE = """\
name = "test-site-1"

[attributes]
StudyDescription = "keep"
"(0008,0080)" = { replace = "Research Hospital" }
AccessionNumber = "hash"
StudyDate = "shift-date"
Manufacturer = "remove"
SeriesNumber = "empty"

[private."ACME 1.0"]
"(0009,xx01)" = "keep"
"""


def ct_with_private() -> Dataset:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyDescription = "CT chest"
    ds.AccessionNumber = "ACC-0001"
    block = ds.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "kept by the site")
    block.add_new(0x02, "LO", "not named: removed")
    return ds


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE)
    return path


def test_each_site_action_applies(site_file: Path) -> None:
    original = ct_with_private()
    ds = anonymize(ct_with_private(), build_policy([], site_file), KEYS)
    assert ds.StudyDescription == "CT chest"  # keep (the profile removes it)
    assert ds.InstitutionName == "Research Hospital"  # replace
    assert ds.AccessionNumber == KEYS.text("ACC-0001", 16) != "ACC-0001"  # hash: keyed
    assert len(ds.StudyDate) == 8 and ds.StudyDate != original.StudyDate  # shift-date
    assert "Manufacturer" not in ds  # remove (the profile keeps it)
    assert ds.SeriesNumber is None  # empty
    block = ds.private_block(0x0009, "ACME 1.0")
    assert ds[block.get_tag(0x01)].value == "kept by the site"
    assert block.get_tag(0x02) not in ds
    assert not [
        e
        for e in ds
        if e.tag.is_private and e.tag not in (block.get_tag(0x01),) and not e.tag.is_private_creator
    ]
    assert "site rules: test-site-1" in ds.DeidentificationMethod


def test_hash_is_the_same_across_runs(site_file: Path) -> None:
    one = anonymize(ct_with_private(), build_policy([], site_file), KEYS)
    two = anonymize(
        ct_with_private(), build_policy([], site_file), Pseudonymizer(b"site-rules-salt")
    )
    assert one.AccessionNumber == two.AccessionNumber
    other = anonymize(ct_with_private(), build_policy([], site_file), Pseudonymizer(b"other"))
    assert other.AccessionNumber != one.AccessionNumber


def test_shift_date_uses_the_patients_offset(site_file: Path) -> None:
    ds = anonymize(ct_with_private(), build_policy([], site_file), KEYS)
    assert load_rules(site_file).name == "test-site-1"
    before = dt.datetime.strptime(ct_with_private().StudyDate, "%Y%m%d")
    after = dt.datetime.strptime(ds.StudyDate, "%Y%m%d")
    assert (after - before).days == KEYS.date_shift_days(str(ct_with_private().PatientID))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[attributes]\nStudyDescription = "kep"\n',
            "line 2: StudyDescription: unknown action 'kep'",
        ),
        (
            '\n\n[attributes]\nStudyDescriptn = "keep"\n',
            "line 4: StudyDescriptn: not a DICOM keyword",
        ),
        (
            '[attributes]\nRows = "hash"\n',
            "line 2: Rows: hash needs a text attribute; this one is US",
        ),
        (
            '[attributes]\nStudyTime = "shift-date"\n',
            "line 2: StudyTime: shift-date needs a DA or DT",
        ),
        (
            '[attributes]\nStudyDate = { replace = "yesterday" }\n',
            "line 2: StudyDate: replacement not valid",
        ),
        ('[attributes]\nStudyDate = { with = "x" }\n', "line 2: StudyDate: a table rule must be"),
        (
            '[attributes]\nPatientID = "patient-pseudonym"\n',
            "line 2: PatientID: cannot be changed by rules",
        ),
        (
            '[attributes]\n"(0009,1001)" = "keep"\n',
            "line 2: (0009,1001): a private attribute goes under",
        ),
        (
            '[private."ACME"]\n"(0008,xx01)" = "keep"\n',
            "line 2: (0008,xx01): not a private element",
        ),
        ('colour = "blue"\n', "line 1: colour: unknown key"),
        ("[attributes\n", "not valid TOML"),
        ('[attributes]\nStudyDate = "uid"\n', "line 2: StudyDate: uid needs a UI attribute"),
        ('[attributes]\nPixelData = "remove"\n', "line 2: PixelData: cannot be changed by rules"),
        (
            '[attributes]\nMoveOriginatorApplicationEntityTitle = "keep"\n',
            "line 2: MoveOriginatorApplicationEntityTitle: command elements (0000,eeee) are always",
        ),
        ('[attributes]\nPatientName = "keep"\n', "line 2: PatientName: cannot be changed by rules"),
        (
            '[attributes]\nStudyDescription = "keep"\n"(0008,1030)" = "remove"\n',
            "line 3: (0008,1030): the same attribute as StudyDescription (line 2)",
        ),
        ('[private."ACME"]\n"(0019,xx0C" = "keep"\n', "line 2: (0019,xx0C: not a private element"),
        ('[private.""]\n"(0019,xx0C)" = "keep"\n', "the private creator is empty"),
        ("name = 3\n", "line 1: name: must be text"),
        ('name = "a\\\\b"\n', "line 1: name: must be text"),
        ("\n[attribute]\nRows = 1\n", "line 2: attribute: unknown key"),
    ],
)
def test_invalid_rules_name_the_line(text: str, message: str) -> None:
    with pytest.raises(RulesError) as raised:
        parse_rules(text, "site.toml")
    assert str(raised.value).startswith("site.toml")
    assert message in str(raised.value)


def test_missing_rules_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"rules file .*nope.toml: No such file"):
        build_policy([], tmp_path / "nope.toml")


def test_a_rule_that_cannot_apply_fails_closed(tmp_path: Path) -> None:
    """shift-date or hash on a private element of another VR removes it, never keeps it."""
    rules = tmp_path / "site.toml"
    rules.write_text('[private."ACME 1.0"]\n"(0009,xx01)" = "shift-date"\n"(0009,xx03)" = "hash"\n')
    ds = ct_with_private()
    block = ds.private_block(0x0009, "ACME 1.0")
    block.add_new(0x03, "SL", 912)
    out = anonymize(ds, build_policy([], rules), KEYS)
    assert not [e for e in out if e.tag.is_private and not e.tag.is_private_creator]


def test_uid_rules_keep_registered_uids(tmp_path: Path) -> None:
    rules = tmp_path / "site.toml"
    rules.write_text('[attributes]\nSOPClassUID = "uid"\n')
    original = ct_with_private()
    out = anonymize(ct_with_private(), build_policy([], rules), KEYS)
    assert out.SOPClassUID == original.SOPClassUID  # a SOP class names no patient
    assert out.SOPInstanceUID == KEYS.uid(original.SOPInstanceUID)


def test_a_rewrite_that_does_not_fit_the_encoded_vr_removes_the_element(tmp_path: Path) -> None:
    """An attribute encoded with another VR than the dictionary's, whose rule writes a new
    value (dummy, hash, shift, replace) that the encoded VR cannot hold, goes."""
    rules = tmp_path / "site.toml"
    rules.write_text(
        "[attributes]\n"
        'AccessionNumber = "hash"\n'
        'StudyDate = "shift-date"\n'
        'SeriesDate = "clean"\n'
        'InstitutionalDepartmentName = { replace = "Radiology" }\n'
    )
    ds = ct_with_private()
    hospital = Dataset()
    hospital.Manufacturer = "General Hospital of Baker Street"
    ds.add(DataElement(0x00080080, "SQ", Sequence([hospital])))  # InstitutionName (D) as SQ
    ds.add(DataElement(0x00080050, "FD", 912345.0))  # AccessionNumber as FD
    ds.add(DataElement(0x00080020, "US", 1961))  # StudyDate as US
    ds.add(DataElement(0x00080021, "LO", "1961-07-04"))  # SeriesDate as LO: no date to move
    ds.add(DataElement(0x00081040, "SS", 17))  # InstitutionalDepartmentName as SS
    data = encode(anonymize(ds, build_policy([], rules), KEYS))
    assert b"Baker Street" not in data
    out = dcmread(io.BytesIO(data))
    for keyword in ("InstitutionName", "AccessionNumber", "StudyDate", "SeriesDate"):
        assert keyword not in out, keyword
    assert "InstitutionalDepartmentName" not in out
