"""`dicomflow import`: folders, DICOMDIR media and zips into landing; non-DICOM skipped."""

from __future__ import annotations

import zipfile
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file

from flows.cli import main
from flows.settings import Settings
from receiver.landing import LandingZone
from tests.faults import make_instances


def landed_uids(settings: Settings) -> list[str]:
    return [
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in LandingZone(settings.landing).completed()
    ]


def test_import_a_folder_tree_skipping_what_is_not_dicom(settings, tmp_path, capsys) -> None:
    tree = tmp_path / "tree"
    files = make_instances(tree / "a" / "b", 3, side=16)
    (tree / "notes.txt").write_text("hello")
    (tree / "a" / "scan.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a dicom file")
    (tree / ".hidden.dcm").write_bytes(files[0].read_bytes())
    assert main(["import", str(tree)]) == 0
    assert "imported 3 files" in capsys.readouterr().out
    expected = [str(dcmread(p).SOPInstanceUID) for p in files]
    assert sorted(landed_uids(settings)) == sorted(expected)


def test_import_media_through_its_dicomdir(settings, capsys) -> None:
    dicomdir = Path(get_testdata_file("DICOMDIR"))
    assert main(["import", str(dicomdir)]) == 0
    out = capsys.readouterr().out
    from pydicom.fileset import FileSet

    indexed = {str(i.SOPInstanceUID) for i in FileSet(dicomdir)}
    assert set(landed_uids(settings)) == indexed and f"imported {len(indexed)} files" in out


def test_import_a_zip_and_autoload(prefect_harness, settings, tmp_path, capsys) -> None:
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in make_instances(tmp_path / "z", 2, side=16):
            zipped.write(path, f"study/{path.name}")
        zipped.writestr("README.txt", "not dicom")
    assert main(["import", str(archive), "--autoload"]) == 0
    out = capsys.readouterr().out
    assert "imported 2 files" in out and "skipped 1" in out and "archived 2" in out
    assert LandingZone(settings.landing).completed() == []


def test_import_of_nothing_real_fails_in_one_line(settings, tmp_path, capsys) -> None:
    assert main(["import", str(tmp_path / "missing")]) == 1
    assert "no such file or folder" in capsys.readouterr().out
