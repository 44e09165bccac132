"""`dicomflow import`: folders, DICOMDIR media and zips into landing; non-DICOM skipped."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
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


def a_real_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        for name in ("CT_small.dcm", "MR_small.dcm"):
            zipped.write(get_testdata_file(name), name)
    return path


def test_a_zip_that_does_not_open_fails_and_is_not_called_not_dicom(
    settings, tmp_path, capsys
) -> None:
    real = a_real_zip(tmp_path / "real.zip").read_bytes()
    (tmp_path / "corrupt.zip").write_bytes(bytes(range(256)) * 20)
    (tmp_path / "truncated.zip").write_bytes(real[:3000])
    (tmp_path / "empty.zip").write_bytes(b"")
    (tmp_path / "unnamed").write_bytes(real[:3000])  # a zip by its first bytes only
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "corrupt.zip").write_bytes(bytes(range(256)) * 20)
    names = ["corrupt.zip", "truncated.zip", "empty.zip", "unnamed", "folder"]
    assert main(["import", "--no-progress", *(str(tmp_path / n) for n in names)]) == 1
    out = capsys.readouterr().out
    assert "imported 0 files" in out and "skipped 0 that are not DICOM; 5 failed" in out
    for name in ["corrupt.zip", "truncated.zip", "empty.zip", "unnamed", "folder/corrupt.zip"]:
        assert f"failed: {tmp_path / name}: not a readable zip (" in out
    assert "not a readable zip (empty file)" in out


def copy_of_media(tmp_path: Path) -> Path:
    """pydicom's dicomdirtests File-set, copied where files can be deleted."""
    import shutil

    media = tmp_path / "media"
    shutil.copytree(Path(get_testdata_file("DICOMDIR", read=False)).parent, media)
    return media / "DICOMDIR"


def test_files_a_dicomdir_names_but_lacks_fail_without_warnings(
    settings, tmp_path, capsys, recwarn
) -> None:
    from pydicom.fileset import FileSet

    dicomdir = copy_of_media(tmp_path)
    everything = list(FileSet(dicomdir))
    gone = [Path(i.path) for i in everything[:3]]
    for path in gone:
        path.unlink()
    recwarn.clear()
    assert main(["import", "--no-progress", str(dicomdir)]) == 1
    out = capsys.readouterr().out
    assert not [w for w in recwarn.list if issubclass(w.category, UserWarning)]
    expected = f"imported {len(everything) - 3} files into {settings.landing}; read 1 DICOMDIR; "
    assert expected + "skipped 0 that are not DICOM; 3 failed" in out
    for path in gone:
        assert f"failed: {path}: named by {dicomdir} but missing" in out


def test_a_dicomdir_alone_fails_each_file_it_names(settings, tmp_path, capsys, recwarn) -> None:
    from pydicom.fileset import FileSet

    alone = tmp_path / "dd1" / "DICOMDIR"
    alone.parent.mkdir()
    alone.write_bytes(Path(get_testdata_file("DICOMDIR")).read_bytes())
    named = len(list(FileSet(get_testdata_file("DICOMDIR"))))
    recwarn.clear()
    assert main(["import", "--no-progress", str(alone)]) == 1
    out = capsys.readouterr().out
    assert not [w for w in recwarn.list if issubclass(w.category, UserWarning)]
    assert f"skipped 0 that are not DICOM; {named} failed" in out
    assert out.count("named by") == 20 and f"... and {named - 20} more failed" in out


@pytest.mark.timeout(60)  # before the fix, reading the FIFO waited for a writer forever
def test_fifos_and_devices_are_failed_without_opening_them(settings, tmp_path, capsys) -> None:
    import os

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "CT_small.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    os.mkfifo(folder / "inside")
    os.mkfifo(folder / "DICOMDIR")  # not read to see whether it is one
    os.mkfifo(tmp_path / "alone")  # opened for reading, a FIFO without a writer blocks forever
    assert main(["import", "--no-progress", str(tmp_path / "alone"), str(folder), "/dev/null"]) == 1
    out = capsys.readouterr().out
    assert "imported 1 files" in out and "4 failed" in out
    assert f"failed: {folder / 'DICOMDIR'}: not a regular file or folder (a FIFO)" in out
    assert f"failed: {tmp_path / 'alone'}: not a regular file or folder (a FIFO)" in out
    assert f"failed: {folder / 'inside'}: not a regular file or folder (a FIFO)" in out
    assert "failed: /dev/null: not a regular file or folder (a character device)" in out
