"""An autoload interrupted between its steps loses nothing and duplicates nothing on re-run."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

import catalog
from flows.autoload import autoload, ingest_context
from flows.settings import Settings
from receiver.landing import LandingZone
from tasks.ingest import archive_files, record_instances

NAMES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "CT_small.dcm"]
"""Four distinct instances, one of them received twice."""


def land(settings: Settings) -> list[Path]:
    zone = LandingZone(settings.landing)
    return [zone.store(Path(get_testdata_file(name)).read_bytes()) for name in NAMES]


def assert_exactly_once(settings: Settings) -> None:
    files = sorted(settings.archive.rglob("*.dcm"))
    con = catalog.connect(settings.catalog_location)
    rows = con.execute("SELECT sop_instance_uid FROM instances_history").fetchall()
    assert len(files) == 4
    assert len(rows) == 4 and len({r[0] for r in rows}) == 4
    assert {r[0] for r in rows} == {p.stem for p in files}
    assert LandingZone(settings.landing).completed() == []
    assert not settings.quarantine.exists() or not any(settings.quarantine.iterdir())
    assert not [p for p in settings.archive.rglob("*") if p.name.endswith(".partial")]


@pytest.mark.parametrize("crash_after", ["archive", "record"])
def test_rerun_after_crash(prefect_harness, settings: Settings, crash_after: str) -> None:
    landed = land(settings)
    ctx = ingest_context(settings, "crashed-run")
    outcome = archive_files(landed, ctx)  # archive files written and fsynced ...
    assert outcome.new == 4 and outcome.duplicates == 1
    if crash_after == "record":
        assert record_instances(outcome.archived, settings.catalog_location) == 4
    # ... and the process dies here: landed files were never deleted.
    assert len(LandingZone(settings.landing).completed()) == 5

    summary = autoload()

    assert summary.archived == 0 and summary.duplicates == 5
    assert summary.recorded == (4 if crash_after == "archive" else 0)
    assert_exactly_once(settings)


def test_crash_mid_batch_leaves_rest_for_next_run(prefect_harness, settings: Settings) -> None:
    landed = land(settings)
    ctx = ingest_context(settings, "crashed-run")
    archive_files(landed[:2], ctx)  # died after two files of the batch
    summary = autoload()
    assert summary.archived == 2 and summary.duplicates == 3
    assert_exactly_once(settings)


def test_only_storage_failures_are_retried() -> None:
    from prefect.states import Failed

    from tasks.autoload import storage_failure
    from tasks.ingest import StorageUnavailable

    full = StorageUnavailable.during("archive write", OSError(28, "No space left on device"))
    assert storage_failure(None, None, Failed(data=full))  # type: ignore[arg-type]
    assert not storage_failure(None, None, Failed(data=ValueError("bad rules")))  # type: ignore[arg-type]
