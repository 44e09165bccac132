"""What the autoloader refuses, and why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tasks.parse import Rejected, read_instance


def reason_for(path: Path) -> str:
    with pytest.raises(Rejected) as info:
        read_instance(path)
    return info.value.reason


def test_good_file_is_read(tmp_path: Path) -> None:
    ds = read_instance(Path(get_testdata_file("CT_small.dcm")))
    assert ds.SOPInstanceUID


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    assert reason_for(path) == "empty-file"


def test_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"this is not DICOM at all" * 40)
    assert reason_for(path) == "not-dicom"


def test_truncated_file(tmp_path: Path) -> None:
    source = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(source[: len(source) // 2])
    assert reason_for(path) in {"truncated", "unreadable"}


def test_missing_study_uid(tmp_path: Path) -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    del ds.StudyInstanceUID
    path = tmp_path / "nostudy.dcm"
    ds.save_as(path)
    with pytest.raises(Rejected, match="StudyInstanceUID"):
        read_instance(path)


def test_dicomdir_is_not_an_instance(tmp_path: Path) -> None:
    path = tmp_path / "DICOMDIR.dcm"
    shutil.copy(get_testdata_file("DICOMDIR"), path)
    assert reason_for(path) == "dicomdir"
