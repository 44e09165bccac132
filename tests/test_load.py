"""Load: four dcmtk storescu senders at once, 500 instances each, then one autoload run."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

import catalog
from flows.autoload import autoload
from flows.settings import Settings
from receiver.landing import LandingZone
from receiver.scp import Receiver, start_receiver
from receiver.settings import ReceiverSettings
from tests.conftest import dcmtk_env, require_dcmtk

SENDERS = 4
PER_SENDER = 500


KEPT = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "Modality",
    "StudyDescription",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelData",
]
"""CT_small's patient, study, series and image attributes: a small but whole instance."""


def make_instances(folder: Path, count: int, study: str) -> list[Path]:
    """`count` small CT instances (8x8 pixels) of one study, each with its own UIDs."""
    source = dcmread(get_testdata_file("CT_small.dcm"))
    template = Dataset()
    for keyword in KEPT:
        template.add(source[keyword])
    template.file_meta = source.file_meta
    template.Rows = template.Columns = 8
    template.PixelData = bytes(range(128))
    template.StudyInstanceUID = study
    template.SeriesInstanceUID = generate_uid()
    folder.mkdir(parents=True)
    paths = []
    for n in range(count):
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.InstanceNumber = n + 1
        path = folder / f"{n:04d}.dcm"
        template.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def roomy(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A receiver with room for every sender, and autoload in batches of 500."""
    monkeypatch.setenv("DICOMFLOW_AUTOLOAD__BATCH_SIZE", "500")
    scp = start_receiver(ReceiverSettings(port=0, max_associations=8), settings.landing)
    try:
        yield scp
    finally:
        scp.stop(grace_seconds=2)


def test_four_storescu_senders_then_autoload(
    prefect_harness,
    roomy: Receiver,
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_dcmtk()
    folders = []
    for sender in range(SENDERS):
        folder = tmp_path / f"sender{sender}"
        make_instances(folder, PER_SENDER, generate_uid())
        folders.append(folder)

    def send(folder: Path) -> subprocess.CompletedProcess[str]:
        command = ["storescu", "-aet", f"LOAD{folder.name[-1]}", "-aec", "DICOMFLOW"]
        command += ["+sd", "127.0.0.1", str(roomy.port), str(folder)]
        return subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=300)

    started = time.perf_counter()
    with ThreadPoolExecutor(SENDERS) as pool:
        results = list(pool.map(send, folders))
    received = time.perf_counter() - started
    assert [r.returncode for r in results] == [0] * SENDERS, [r.stderr[-500:] for r in results]
    assert not [r.stderr for r in results if "E:" in r.stderr]
    total = SENDERS * PER_SENDER
    assert (roomy.counter.stored, roomy.counter.failed) == (total, 0)
    landing = LandingZone(settings.landing)
    assert len(landing.completed()) == total

    started = time.perf_counter()
    summary = autoload()
    loaded = time.perf_counter() - started
    assert (summary.landed, summary.archived, summary.duplicates) == (total, total, 0)
    assert summary.quarantined == {} and summary.recorded == total
    con = catalog.connect(settings.catalog_store())
    assert con.execute("SELECT count(*) FROM instances").fetchone() == (total,)
    assert con.execute("SELECT count(*) FROM instances_history").fetchone() == (total,)
    assert con.execute("SELECT count(*) FROM studies").fetchone() == (SENDERS,)
    assert len(list(settings.archive.rglob("*.dcm"))) == total
    assert landing.completed() == []
    with capsys.disabled():
        print(
            f"\nload: {total} instances from {SENDERS} storescu senders received in "
            f"{received:.1f} s ({total / received:.0f}/s), autoloaded in {loaded:.1f} s"
        )
