"""The retrieve flow end to end: job list -> C-FIND/C-MOVE from a real PACS -> our
receiver -> autoload -> catalog, with resumption, re-requests and the circuit breaker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect.settings import PREFECT_API_URL
from pydicom import dcmread

import catalog
from flows.autoload import autoload
from flows.retrieve import retrieve
from flows.settings import Settings
from receiver.landing import LandingZone, PartialFile
from receiver.scp import Receiver
from tasks.retrieval import job_id_for, load_job, read_progress
from tests.conftest import free_port, prefect_events
from tests.peers import Site, Study
from tests.prefect_runs import read_run


def write_config(path: Path, site: Site, **retrieve: object) -> Path:
    """A TOML config naming the peers as nodes and our receiver's port."""
    lines = [f"[receiver]\nport = {site.receiver_port}\n", "[retrieve]"]
    settings = {"retry_delay_seconds": 0, "autoload_wait_seconds": 30, **retrieve}
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    for name, node in site.nodes().items():
        lines.append(f"\n[nodes.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in node.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def config(pacs_site: Site, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_config(settings.data_dir.parent / "site.toml", pacs_site)
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(path))
    return path


def job_csv(path: Path, column: str, values: list[str]) -> Path:
    path.write_text("\n".join([column, *values]) + "\n")
    return path


def outcome_rows(summary_file: str) -> list[dict[str, object]]:
    return sorted(
        pq.read_table(summary_file).to_pylist(), key=lambda r: (r["row"], r["study_uid"] or "")
    )


def archived_count(settings: Settings) -> int:
    con = catalog.connect(settings.catalog_store())
    return int(con.sql("SELECT count(*) FROM instances").fetchall()[0][0])


def archive_files(settings: Settings) -> int:
    return sum(1 for p in settings.archive.rglob("*.dcm") if ".sop-index" not in p.parts)


def receipts(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "dicomflow.receipts"]


def test_job_round_trip_skips_what_is_archived(
    prefect_harness,
    pacs_site: Site,
    settings: Settings,
    config: Path,
    pacs_receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="dicomflow.receipts")
    first, second, third = pacs_site.studies
    # The third study is archived already, by hand.
    settings_path = str(config)
    retrieve(
        node="orthanc",
        job_file=str(
            job_csv(settings.data_dir.parent / "one.csv", "StudyInstanceUID", [third.study_uid])
        ),
        config_file=settings_path,
    )
    assert archived_count(settings) == len(third.files)

    job = job_csv(
        settings.data_dir.parent / "job.csv",
        "AccessionNumber",
        [first.spec.accession, second.spec.accession, "NO-SUCH-ACCESSION", third.spec.accession],
    )
    since = datetime.now(UTC)
    summary = retrieve(node="orthanc", job_file=str(job), config_file=settings_path)

    rows = outcome_rows(summary.outcome_file)
    assert [r["state"] for r in rows] == ["complete", "complete", "not-found", "skipped"]
    assert [r["expected"] for r in rows] == [
        len(first.files),
        len(second.files),
        None,
        len(third.files),
    ]
    assert rows[0]["moved"] == rows[0]["archived"] == len(first.files)
    total = sum(len(s.files) for s in pacs_site.studies)
    assert archived_count(settings) == archive_files(settings) == total
    assert not LandingZone(settings.landing).completed()
    moved = [r for r in receipts(caplog) if r["job_id"] == summary.job_id]
    assert len(moved) == len(first.files) + len(second.files)  # each links back to its job
    assert summary.states == {"complete": 2, "not-found": 1, "skipped": 1}
    events = prefect_events("dicomflow.study.retrieved", since, wanted=3)
    assert sorted(e["payload"]["state"] for e in events) == ["complete", "complete", "skipped"]
    originals = {s.study_uid for s in pacs_site.studies}
    assert not any(o in json.dumps(e) for e in events for o in originals)


def test_dcmqrscp_without_instance_counts(
    prefect_harness, pacs_site: Site, settings: Settings, config: Path, pacs_receiver: Receiver
) -> None:
    """dcmqrscp returns no Number of Series Related Instances: the flow counts images."""
    first = pacs_site.studies[0]
    job = job_csv(settings.data_dir.parent / "job.csv", "StudyInstanceUID", [first.study_uid])
    summary = retrieve(node="dcmqrscp", job_file=str(job), config_file=str(config))
    (row,) = outcome_rows(summary.outcome_file)
    assert row["state"] == "complete" and row["expected"] == len(first.files)
    assert archived_count(settings) == len(first.files)


def flaky_store(monkeypatch: pytest.MonkeyPatch, sop_uid: str, refusals: int) -> list[int]:
    """Make the landing zone refuse `sop_uid` (Out of Resources) its first `refusals` times."""
    original = LandingZone.adopt
    seen = [0]

    def adopt(self: LandingZone, partial: PartialFile) -> Path:
        if str(dcmread(partial.path, stop_before_pixels=True).SOPInstanceUID) == sop_uid:
            seen[0] += 1
            if seen[0] <= refusals:
                raise OSError(28, "No space left on device")
        return original(self, partial)

    monkeypatch.setattr(LandingZone, "adopt", adopt)
    return seen


def _sop_uid(study: Study) -> str:
    return str(dcmread(study.files[-1], stop_before_pixels=True).SOPInstanceUID)


@pytest.mark.parametrize(("refusals", "rerequests"), [(1, 1), (2, 2)])
def test_missing_instances_are_requested_again(
    prefect_harness,
    pacs_site: Site,
    settings: Settings,
    config: Path,
    pacs_receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    refusals: int,
    rerequests: int,
) -> None:
    """dcmqrscp goes on past a refused sub-operation and ends with a warning: the study
    is short, so its series is moved again (round 1), then the image alone (round 2)."""
    study = pacs_site.studies[0]
    seen = flaky_store(monkeypatch, _sop_uid(study), refusals)
    job = job_csv(settings.data_dir.parent / "job.csv", "StudyInstanceUID", [study.study_uid])
    summary = retrieve(node="dcmqrscp", job_file=str(job), config_file=str(config))
    (row,) = outcome_rows(summary.outcome_file)
    assert row["state"] == "complete", row
    assert row["rerequests"] == rerequests and row["failed"] == refusals
    assert seen[0] == refusals + 1
    assert archived_count(settings) == archive_files(settings) == len(study.files)


def test_failed_move_is_retried(
    prefect_harness,
    pacs_site: Site,
    settings: Settings,
    config: Path,
    pacs_receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Orthanc fails the whole C-MOVE when one sub-operation fails: a transient failure,
    so the study is tried again and ends complete."""
    study = pacs_site.studies[0]
    seen = flaky_store(monkeypatch, _sop_uid(study), refusals=1)
    job = job_csv(settings.data_dir.parent / "job.csv", "StudyInstanceUID", [study.study_uid])
    summary = retrieve(node="orthanc", job_file=str(job), config_file=str(config))
    (row,) = outcome_rows(summary.outcome_file)
    assert row["state"] == "complete" and seen[0] == 2
    assert archived_count(settings) == archive_files(settings) == len(study.files)


def test_study_still_short_after_every_round_is_incomplete(
    prefect_harness,
    pacs_site: Site,
    settings: Settings,
    pacs_receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = pacs_site.studies[0]
    flaky_store(monkeypatch, _sop_uid(study), refusals=100)
    config = write_config(settings.data_dir.parent / "site.toml", pacs_site, max_rerequests=1)
    job = job_csv(settings.data_dir.parent / "job.csv", "StudyInstanceUID", [study.study_uid])
    summary = retrieve(node="dcmqrscp", job_file=str(job), config_file=str(config))
    (row,) = outcome_rows(summary.outcome_file)
    assert row["state"] == "incomplete" and row["rerequests"] == 1
    assert row["archived"] == len(study.files) - 1
    assert row["message"] == f"1 of {len(study.files)} instances missing"


def test_breaker_opens_after_repeated_failures(
    prefect_harness, pacs_site: Site, settings: Settings
) -> None:
    config = write_config(
        settings.data_dir.parent / "site.toml", pacs_site, retries=0, breaker_failures=2
    )
    with config.open("a") as fh:  # a node nobody listens on
        fh.write(f'\n[nodes.down]\nae_title = "DOWN"\nhost = "127.0.0.1"\nport = {free_port()}\n')
        fh.write("max_associations = 1\n")
    job = job_csv(settings.data_dir.parent / "job.csv", "AccessionNumber", ["A1", "A2", "A3", "A4"])
    summary = retrieve(node="down", job_file=str(job), config_file=str(config))
    rows = outcome_rows(summary.outcome_file)
    assert [r["state"] for r in rows] == ["failed", "failed", "deferred", "deferred"]
    assert "connection refused" in str(rows[0]["message"])
    assert "circuit breaker open" in str(rows[2]["message"])
    reasons = {state: (why, n) for state, why, n in summary.reasons}  # counted, for the terminal
    assert set(reasons) == {"failed", "deferred"} and reasons["failed"][1] == 2
    assert "connection refused" in reasons["failed"][0] and reasons["deferred"][1] == 2
    assert "circuit breaker open" in reasons["deferred"][0]
    again = retrieve(node="down", job_file=str(job), config_file=str(config))
    assert again.states == {"deferred": 4}  # still cooling down: the node is left alone


def test_outside_the_window_stops_without_moving(
    prefect_harness, pacs_site: Site, settings: Settings, pacs_receiver: Receiver
) -> None:
    now = time.localtime()
    start = (now.tm_hour + 2) % 24
    window = f"{start:02d}:00-{(start + 1) % 24:02d}:00"
    config = write_config(
        settings.data_dir.parent / "site.toml", pacs_site, window=window, outside_window="stop"
    )
    job = job_csv(
        settings.data_dir.parent / "job.csv", "StudyInstanceUID", [pacs_site.studies[0].study_uid]
    )
    summary = retrieve(node="orthanc", job_file=str(job), config_file=str(config))
    assert summary.states == {"deferred": 1} and summary.moved == 0
    assert not LandingZone(settings.landing).completed()


def _prefect_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


def test_killed_job_resumes_with_what_is_left(
    prefect_harness,
    pacs_site: Site,
    settings: Settings,
    pacs_receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILL the `dicomflow retrieve` process after its first study; the re-run skips it
    and ends with every instance archived exactly once."""
    original = LandingZone.adopt

    def slow_adopt(self: LandingZone, partial: PartialFile) -> Path:
        time.sleep(0.15)  # a slow disk, so the kill lands mid-job
        return original(self, partial)

    monkeypatch.setattr(LandingZone, "adopt", slow_adopt)
    config = write_config(settings.data_dir.parent / "site.toml", pacs_site)
    with config.open("a") as fh:
        fh.write("\n[nodes.orthanc1]\n")
        fh.writelines(
            f"{k} = {json.dumps(v)}\n" for k, v in pacs_site.peers["orthanc"].node().items()
        )
        fh.write("max_associations = 1\n")
    uids = [s.study_uid for s in pacs_site.studies]
    job = job_csv(settings.data_dir.parent / "job.csv", "StudyInstanceUID", uids)
    job_id = job_id_for("orthanc1", load_job(job))
    command = [
        str(Path(sys.executable).with_name("dicomflow")),
        "--config",
        str(config),
        "retrieve",
        str(job),
        "--node",
        "orthanc1",
    ]
    proc = subprocess.Popen(
        command, env=_prefect_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(lambda: read_progress(settings.retrieve_dir, job_id).get("done", 0) >= 1, 120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not read_progress(settings.retrieve_dir, job_id).get("finished")

    monkeypatch.setattr(LandingZone, "adopt", original)
    summary = retrieve(node="orthanc1", job_file=str(job), config_file=str(config))
    rows = outcome_rows(summary.outcome_file)
    assert rows[0]["state"] == "skipped"
    assert {r["state"] for r in rows} <= {"skipped", "complete"}
    total = sum(len(s.files) for s in pacs_site.studies)
    assert archived_count(settings) == archive_files(settings) == total
    assert not LandingZone(settings.landing).completed()
    autoload(str(config))  # nothing left over
    assert archived_count(settings) == total


def test_retrieve_run_shows_its_job_without_patient_data(
    prefect_harness,
    pacs_site: Site,
    settings: Settings,
    config: Path,
    pacs_receiver: Receiver,
    identifier_logging_on: None,
) -> None:
    """Named by job and studies, its outcome table, pynetdicom's lines in its logs; none of
    the patient's identifiers the job and the PACS's answers carry."""
    from pynetdicom import _config

    assert _config.LOG_REQUEST_IDENTIFIERS, "the run itself must switch it off"
    study = pacs_site.studies[2]
    job = job_csv(settings.data_dir.parent / "job.csv", "PatientID", [study.spec.patient_id])
    state = retrieve(node="orthanc", job_file=str(job), config_file=str(config), return_state=True)
    summary = state.result()
    run = read_run(str(PREFECT_API_URL.value()), str(state.state_details.flow_run_id))

    assert re.fullmatch(rf"retrieve {summary.job_id} [-\d]{{10}} \d\d:\d\d · 1 study", run.name)
    assert "pull row 1" in run.task_runs
    (row,) = run.table(f"retrieve-{summary.job_id}")
    assert row["state"] == "complete" and row["archived"] == len(study.files)
    messages = [log["message"] for log in run.logs if log["name"].startswith("pynetdicom")]
    assert "Sending Find Request: MsgID 1" in messages
    assert any(m.startswith("Sending Move Request") for m in messages)
    assert "Received Store Request" in messages  # our receiver's threads, in this process
    spec = study.spec
    originals = {spec.patient_id, spec.patient_name, spec.accession, study.study_uid, "Beta"}
    assert not run.leaks(originals)
