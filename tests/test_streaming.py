"""Large files are archived without reading their pixel data: the same bytes, less memory."""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

import tasks.parse
from flows.demo import sample_files
from tasks.archive import encode, encode_streamed
from tasks.ingest import IngestContext, archive_files
from tasks.parse import Rejected, read_landed
from tasks.quarantine import quarantine


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    level = logging.getLogger("pydicom").level
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    logging.getLogger("pydicom").setLevel(level)


def _by_syntax() -> list[Path]:
    """Up to three readable sample files per transfer syntax."""
    chosen: dict[str, list[Path]] = defaultdict(list)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sample_files():
            try:
                syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            except Exception:
                continue
            if len(chosen[syntax]) < 3:
                chosen[syntax].append(path)
    return [p for paths in chosen.values() for p in paths]


SAMPLES = _by_syntax()


def test_streamed_and_whole_reads_write_the_same_archive_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared = streamed = 0
    for path in SAMPLES:
        try:
            whole = read_landed(path, streaming=False)
        except Rejected:
            continue
        monkeypatch.setattr(tasks.parse, "STREAM_THRESHOLD", 0)
        landed = read_landed(path)
        monkeypatch.undo()
        if landed.bulk is None:
            assert encode(landed.ds) == encode(whole.ds), path.name
        else:
            streamed += 1
            assert "PixelData" not in landed.ds
            streamed_copy = encode_streamed(landed.ds, landed.bulk, path)
            data = b"".join(streamed_copy.chunks())
            assert data == encode(whole.ds), path.name
            assert len(streamed_copy) == len(data)
        compared += 1
    assert compared >= 20 and streamed >= 15


def test_a_repeat_found_in_the_archive_is_described_with_its_pixel_data(
    ctx: IngestContext, tmp_path: Path
) -> None:
    """A re-run after a crash finds the copy archived already."""
    landing = tmp_path / "landing"
    landing.mkdir()
    first, again = landing / "first.dcm", landing / "again.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), first)
    shutil.copy(first, again)
    assert archive_files([first], ctx).new == 1  # ... and the run died before the catalog
    outcome = archive_files([again], ctx)
    assert outcome.duplicates == 1
    assert outcome.archived[0].rows["instances"]["has_pixel_data"] is True


def test_quarantine_onto_another_filesystem_copies_in_chunks(tmp_path: Path) -> None:
    """/dev/shm is a tmpfs: os.replace() from the test's folder fails with EXDEV there."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    landed = tmp_path / "big.dcm"
    landed.write_bytes(bytes(range(256)) * 20000)  # 5 MB: several chunks
    expected = landed.read_bytes()
    folder = Path(tempfile.mkdtemp(dir=shm))
    try:
        kept = quarantine(landed, folder, "not-dicom", "test")
        assert kept.read_bytes() == expected and not landed.exists()
        assert (folder / "big.reason.json").is_file()
    finally:
        shutil.rmtree(folder)
