"""Autoload on a real Dask cluster gives exactly what the local runner gives."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

import catalog
from flows.autoload import autoload
from flows.settings import Settings, SettingsError, load_settings

INSTANCES = 1000
PATIENTS = 4
STUDIES_PER_PATIENT = 2
SERIES_PER_STUDY = 5
IGNORED = {"run_id", "recorded_at", "created_at", "updated_at", "archive_path"}
"""Columns that differ between two runs by nature: the run, the clock, the data root."""
SERIES = PATIENTS * STUDIES_PER_PATIENT * SERIES_PER_STUDY
TABLES = ("patients", "studies", "series", "instances", "records")


def make_corpus(folder: Path, count: int) -> None:
    """`count` copies of CT_small.dcm with new UIDs, over several patients, studies, series."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir(parents=True)
    per_series = count // (PATIENTS * STUDIES_PER_PATIENT * SERIES_PER_STUDY)
    for index in range(count):
        series_no, _ = divmod(index, per_series)
        study_no, _ = divmod(series_no, SERIES_PER_STUDY)
        if index % per_series == 0:
            ds.SeriesInstanceUID = generate_uid()
            if series_no % SERIES_PER_STUDY == 0:
                ds.StudyInstanceUID = generate_uid()
                ds.PatientID = f"PAT{study_no // STUDIES_PER_PATIENT:03d}"
                ds.PatientName = f"Doe^Patient{study_no // STUDIES_PER_PATIENT}"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = index + 1
        # Named like the receiver names files: time order, nothing identifying.
        ds.save_as(folder / f"20260101T{index:012d}Z-{index:032x}.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dask") / "corpus"
    make_corpus(folder, INSTANCES)
    return folder


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two worker processes of one thread each, on loopback; closed after the tests."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as running:
        yield running


def run_autoload(
    root: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch, dask_address: str | None
) -> Settings:
    """Land a copy of `corpus` under `root` and autoload it; the settings used."""
    monkeypatch.setenv("DICOMFLOW_DATA_DIR", str(root))
    monkeypatch.setenv("DICOMFLOW_ANONYMIZE__SALT", "test-salt")
    monkeypatch.setenv("DICOMFLOW_AUTOLOAD__BATCH_SIZE", "100")
    monkeypatch.delenv("DICOMFLOW_CONFIG", raising=False)
    if dask_address:
        monkeypatch.setenv("DICOMFLOW_AUTOLOAD__DASK_ADDRESS", dask_address)
    else:
        monkeypatch.delenv("DICOMFLOW_AUTOLOAD__DASK_ADDRESS", raising=False)
    settings = load_settings()
    shutil.copytree(corpus, settings.landing)
    summary = autoload()
    assert summary.archived == INSTANCES, summary
    assert not summary.quarantined
    return settings


def archive_files(settings: Settings) -> list[str]:
    return sorted(
        p.relative_to(settings.archive).as_posix()
        for p in settings.archive.rglob("*.dcm")
        if ".sop-index" not in p.parts
    )


def catalog_rows(settings: Settings) -> dict[tuple[str, str], list[Any]]:
    """(table, column) -> the column's values in every current row, in a fixed order,
    without the columns that name the run."""
    con = catalog.connect(settings.catalog_location)
    rows = {}
    for table in TABLES:
        columns = [c for c in con.table(table).columns if c not in IGNORED]
        listed = ", ".join(f'"{c}"' for c in columns)
        values = con.sql(f"SELECT {listed} FROM {table} ORDER BY ALL").fetchall()
        for index, column in enumerate(columns):
            rows[(table, column)] = [row[index] for row in values]
    return rows


def test_dask_runner_matches_local(
    prefect_harness: None,
    tmp_path: Path,
    corpus: Path,
    cluster: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = run_autoload(tmp_path / "local", corpus, monkeypatch, None)
    on_dask = run_autoload(tmp_path / "dask", corpus, monkeypatch, cluster.scheduler_address)

    assert len(archive_files(local)) == INSTANCES
    assert archive_files(on_dask) == archive_files(local)
    local_rows, dask_rows = catalog_rows(local), catalog_rows(on_dask)
    assert len(local_rows[("instances", "sop_instance_uid")]) == INSTANCES
    assert len(local_rows[("patients", "patient_id")]) == PATIENTS
    assert len(local_rows[("series", "series_instance_uid")]) == SERIES
    assert dask_rows.keys() == local_rows.keys()
    differ = [column for column, values in local_rows.items() if dask_rows[column] != values]
    assert not differ, f"columns that differ: {differ}"
    assert not list(on_dask.landing.iterdir())


def test_unreachable_dask_address_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.autoload import preflight

    monkeypatch.setenv("DICOMFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DICOMFLOW_ANONYMIZE__SALT", "test-salt")
    monkeypatch.setenv("DICOMFLOW_AUTOLOAD__DASK_ADDRESS", "tcp://127.0.0.1:9")
    with pytest.raises(SettingsError, match="no Dask scheduler reachable") as raised:
        preflight(load_settings())
    assert "\n" not in str(raised.value)
