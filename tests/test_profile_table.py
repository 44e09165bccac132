"""The PS3.15 Table E.1-1 data file: its size, its actions and a sample of its rows."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from pydicom.datadict import dictionary_VR

from tasks.profile import OPTIONS, SAFE_PRIVATE_FILE, TABLE_FILE, load_safe_private, load_table

SHARED_SOURCE = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "ps315-table-e1-1.json"
)


def test_table_has_every_row_of_revision_2024b() -> None:
    table = load_table()
    assert table.revision == "2024b"
    assert "innolitics/dicom-standard" in table.source and "8670abdd" in table.source
    assert len(table.rows) == 621
    assert Counter(r.match for r in table.rows) == {"tag": 617, "mask": 3, "private": 1}
    assert Counter(r.basic for r in table.rows) == {
        "X": 384,
        "D": 92,
        "U": 54,
        "Z": 42,
        "X/D": 22,
        "X/Z": 11,
        "X/Z/D": 8,
        "Z/D": 6,
        "X/Z/U*": 2,
    }


@pytest.mark.parametrize(
    ("keyword", "tag", "basic", "options"),
    [
        ("PatientName", 0x00100010, "Z", {}),
        ("PatientID", 0x00100020, "Z/D", {}),
        ("PatientBirthDate", 0x00100030, "Z", {}),
        ("AccessionNumber", 0x00080050, "Z", {}),
        ("StudyInstanceUID", 0x0020000D, "U", {"retain-uids": "K"}),
        ("SOPInstanceUID", 0x00080018, "U", {"retain-uids": "K"}),
        ("InstitutionName", 0x00080080, "X/Z/D", {"retain-institution-identity": "K"}),
        ("StudyDescription", 0x00081030, "X", {"clean-descriptors": "C"}),
        ("PatientSex", 0x00100040, "Z", {"retain-patient-characteristics": "K"}),
        ("ContentSequence", 0x0040A730, "D", {"clean-structured-content": "C"}),
        (
            "StudyDate",
            0x00080020,
            "Z",
            {"retain-long-full-dates": "K", "retain-long-modified-dates": "C"},
        ),
    ],
)
def test_sample_rows(keyword: str, tag: int, basic: str, options: dict[str, str]) -> None:
    row = load_table().by_keyword(keyword)
    assert (row.tag, row.basic, row.options) == (tag, basic, options)
    assert row.vr == str(dictionary_VR(tag))


def test_repeating_groups_and_private_rows() -> None:
    rows = {r.mask or r.match: r for r in load_table().rows if r.match != "tag"}
    assert rows["50xxxxxx"].basic == rows["60xx3000"].basic == rows["60xx4000"].basic == "X"
    assert rows["60xx3000"].options == {"clean-graphics": "C"}
    assert rows["private"].basic == "X"
    assert rows["private"].options == {"retain-safe-private": "C"}


def test_option_names_are_the_tables() -> None:
    used = {name for r in load_table().rows for name in r.options}
    assert used == set(OPTIONS)


def test_data_file_is_what_the_generator_makes_from_the_source(tmp_path: Path) -> None:
    if not SHARED_SOURCE.exists():
        pytest.skip(f"the source table is not beside the project ({SHARED_SOURCE})")
    spec = importlib.util.spec_from_file_location(
        "make_ps315_table", TABLE_FILE.with_name("make_ps315_table.py")
    )
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    source = json.loads(SHARED_SOURCE.read_text(encoding="utf-8"))
    committed = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    assert committed["rows"] == generator.rows(source)


def test_safe_private_table_is_e_3_10_1() -> None:
    """PS3.15 Table E.3.10-1, transcribed from the cited rendering of the standard."""
    data = json.loads(SAFE_PRIVATE_FILE.read_text())
    assert "E.3.10-1" in data["title"] and "chsasank/dicom_standard" in data["source"]
    assert len(data["rows"]) == 130
    assert len({r["creator"] for r in data["rows"]}) == 16
    safe = load_safe_private()
    assert len(safe) == 130  # (creator, group, element) never repeats
    for key in [
        ("GEMS_PARM_01", 0x0043, 0x39),  # slice and b-value information
        ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B value
        ("Philips PET Private Group", 0x7053, 0x00),  # SUV factor
    ]:
        assert key in safe, key
    assert all(group % 2 == 1 for _, group, _ in safe)
