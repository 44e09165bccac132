"""A catalog built the real way for the report and notebook tests: sample files, autoload.

pydicom's and pydicom-data's sample files (the demo's corpus) are landed as the
receiver names them, over three days (the names carry the arrival time), plus one
patient's CT and an MR twelve days later, made from CT_small and MR_small, and a
file that is not DICOM. Then the real autoload flow archives them, with dates kept
(shifted per patient) so date questions have answers.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from flows.demo import group_by_study, sample_files
from flows.settings import Settings
from receiver.durable import write_atomic
from receiver.landing import LANDED_SUFFIX

DAYS = 3
"""The corpus arrives over this many days, ending today (UTC)."""


def land_as_received(landing: Path, data: bytes, when: datetime) -> Path:
    """Land `data` under the name our receiver would have given it at `when`."""
    landing.mkdir(parents=True, exist_ok=True)
    name = f"{when:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex}{LANDED_SUFFIX}"
    return write_atomic(landing / name, data, overwrite=False)


def ct_then_mr(folder: Path, gap_days: int = 12) -> list[Path]:
    """CT_small's patient gets an MR (MR_small's image, new UIDs) `gap_days` after the CT."""
    folder.mkdir(parents=True, exist_ok=True)
    ct = dcmread(get_testdata_file("CT_small.dcm"))
    mr = dcmread(get_testdata_file("MR_small.dcm"))
    mr.PatientID, mr.PatientName = ct.PatientID, ct.PatientName
    mr.PatientBirthDate = ct.get("PatientBirthDate", "")
    later = datetime.strptime(ct.StudyDate, "%Y%m%d") + timedelta(days=gap_days)
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        if keyword in mr:
            setattr(mr, keyword, f"{later:%Y%m%d}")
    mr.StudyInstanceUID, mr.SeriesInstanceUID = generate_uid(), generate_uid()
    mr.SOPInstanceUID = mr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    paths = [folder / "ct.dcm", folder / "mr.dcm"]
    ct.save_as(paths[0], enforce_file_format=True)
    mr.save_as(paths[1], enforce_file_format=True)
    return paths


def land_corpus(landing: Path, scratch: Path, today: date) -> int:
    """Land every sample study on one of the last `DAYS` days; how many files."""
    studies = list(group_by_study(sample_files()).values())
    studies.append(ct_then_mr(scratch))
    landed = 0
    for number, paths in enumerate(studies):
        day = today - timedelta(days=number % DAYS)
        when = datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(seconds=number)
        for path in paths:
            land_as_received(landing, path.read_bytes(), when)
            landed += 1
    land_as_received(landing, b"\0not dicom" * 16, datetime.now(UTC))
    return landed + 1


@contextmanager
def autoloaded_catalog(root: Path) -> Iterator[Settings]:
    """Settings of a data root under `root` whose catalog autoload has just built.

    Needs the session's Prefect harness. The environment is set for the block, so
    flows and subprocesses see the same data root.
    """
    from flows.autoload import autoload

    with pytest.MonkeyPatch.context() as env:
        env.setenv("DICOMFLOW_DATA_DIR", str(root / "data"))
        env.setenv("DICOMFLOW_ANONYMIZE__SALT", "test-salt")
        env.setenv("DICOMFLOW_ANONYMIZE__OPTIONS", '["retain-long-modified-dates"]')
        env.setenv("DICOMFLOW_AUTOLOAD__BATCH_SIZE", "100")
        env.delenv("DICOMFLOW_CONFIG", raising=False)
        settings = Settings()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some sample files are broken on purpose
            land_corpus(settings.landing, root / "made", datetime.now(UTC).date())
            summary = autoload()
        assert summary.archived > 100 and summary.quarantined, summary
        yield settings
