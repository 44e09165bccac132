"""What an autoload run shows in the Prefect UI: its name, its task runs per batch, its
summary table and its logs (ours and pynetdicom's), without patient data."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect import flow
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from flows.artifacts import AUTOLOAD_KEY, autoload_rows
from flows.autoload import AutoloadSummary, autoload
from flows.naming import artifact_key, autoload_name, batch_name, counted, retrieve_name
from flows.runlogs import run_logs
from flows.settings import Settings
from receiver.landing import LandingZone
from receiver.query import build_identifier, find
from receiver.scp import Receiver, start_receiver
from receiver.scu import peer_for
from receiver.settings import ReceiverSettings, ScuSettings
from tests.prefect_runs import read_run
from tests.test_pipeline import identifying_values

SAMPLES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "SC_rgb.dcm", "CT_small.dcm")
"""pydicom's test files with patient names and IDs; CT_small twice: one duplicate."""


def land_samples(landing: Path) -> set[str]:
    """Land the samples as our receiver would, a truncated copy of one under a file name
    made of its patient's name and ID (as someone dropping files by hand might), and a
    file that is not DICOM: 7 files. Returns the patients' names and IDs."""
    zone = LandingZone(landing)
    originals: set[str] = set()
    for name in SAMPLES:
        path = Path(get_testdata_file(name))
        zone.store(path.read_bytes())
        originals |= identifying_values(dcmread(path, stop_before_pixels=True))
    plan = Path(get_testdata_file("rtplan.dcm"))
    ds: Dataset = dcmread(plan, stop_before_pixels=True)
    (landing / f"{ds.PatientName} {ds.PatientID}.dcm").write_bytes(plan.read_bytes()[:300])
    zone.store(b"\x00not dicom" * 50)
    assert {"CompressedSamples^CT1", "1CT1", "Last^First^mid^pre", "id00001"} <= originals
    return originals


# --- names and the table: pure ---------------------------------------------------------


def test_names_read_like_a_log() -> None:
    at = datetime(2026, 12, 3, 14, 5, 59, tzinfo=UTC)
    assert autoload_name(at) == "autoload 2026-12-03 14:05"
    assert autoload_name(at, 412) == "autoload 2026-12-03 14:05 · 412 files"
    assert autoload_name(at, 1) == "autoload 2026-12-03 14:05 · 1 file"
    assert autoload_name(at, 3, skipped=True) == "autoload 2026-12-03 14:05 · skipped"
    assert retrieve_name("job-1a2b", at, 12) == "retrieve job-1a2b 2026-12-03 14:05 · 12 studies"
    assert retrieve_name("job-1a2b", at, 1, "row") == "retrieve job-1a2b 2026-12-03 14:05 · 1 row"
    assert batch_name("archive", 3, 7, 500) == "archive batch 3/7 · 500 files"
    assert counted(0, "study") == "0 studies"
    assert artifact_key("retrieve", "Nightly_Job 7") == "retrieve-nightly-job-7"


def test_summary_table_has_a_row_per_measure_and_per_reason() -> None:
    summary = AutoloadSummary(
        landed=10,
        archived=6,
        versions=1,
        duplicates=1,
        quarantined={"phi-gate": 1, "not-dicom": 1},
        bytes=4_000_000,
        seconds=2.0,
    )
    rows = {r["measure"]: r["value"] for r in autoload_rows(summary)}
    assert rows["files landed"] == 10 and rows["archived (new instances)"] == 6
    assert rows["new versions"] == 1 and rows["duplicates"] == 1
    assert rows["quarantined"] == 2
    assert rows["quarantined: not-dicom"] == rows["quarantined: phi-gate"] == 1
    assert rows["bytes archived"] == 4_000_000 and rows["seconds"] == 2.0
    assert rows["files/s"] == 5.0 and rows["MB/s"] == 2.0


def test_run_logs_keep_the_console_as_quiet_as_before(prefect_harness) -> None:
    """At INFO into the run's logs; the console (root's handlers) only what it got before."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root, ours = logging.getLogger(), logging.getLogger("pynetdicom")
    keep, level = Keep(), ours.level
    root.addHandler(keep)
    ours.setLevel(logging.WARNING)
    try:

        @flow(name="log-routing")
        def chatter() -> None:
            with run_logs(flow_run.id):
                logging.getLogger("pynetdicom.assoc").info("chatter at INFO")
                logging.getLogger("pynetdicom.assoc").warning("a warning")

        state = chatter(return_state=True)
        after = (ours.level, ours.propagate)
    finally:
        root.removeHandler(keep)
        ours.setLevel(level)
    assert [r.getMessage() for r in seen if r.name.startswith("pynetdicom")] == ["a warning"]
    assert after == (logging.WARNING, True), "the run leaves the logger as it found it"
    run = read_run(str(PREFECT_API_URL.value()), str(state.state_details.flow_run_id))
    messages = [log["message"] for log in run.logs if log["name"] == "pynetdicom.assoc"]
    assert sorted(messages) == ["a warning", "chatter at INFO"]


# --- a real autoload run ---------------------------------------------------------------


def test_autoload_run_names_itself_and_its_batches_and_shows_its_summary(
    prefect_harness, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DICOMFLOW_AUTOLOAD__BATCH_SIZE", "3")
    originals = land_samples(settings.landing)

    state = autoload(return_state=True)
    summary: AutoloadSummary = state.result()
    api = str(PREFECT_API_URL.value())
    run = read_run(api, str(state.state_details.flow_run_id))

    assert summary.landed == 7 and summary.batches == 3
    assert summary.duplicates == 1 and sum(summary.quarantined.values()) >= 2
    handled = summary.archived + summary.versions + summary.duplicates
    assert handled + sum(summary.quarantined.values()) == 7
    assert re.fullmatch(r"autoload \d{4}-\d\d-\d\d \d\d:\d\d · 7 files", run.name), run.name
    archive_runs = [n for n in run.task_runs if n.startswith("archive batch")]
    assert archive_runs == [
        "archive batch 1/3 · 3 files",
        "archive batch 2/3 · 3 files",
        "archive batch 3/3 · 1 file",
    ]
    for step in ("record", "clear landing"):
        named = [n for n in run.task_runs if n.startswith(f"{step} batch")]
        assert len(named) == 3 and all(
            re.fullmatch(rf"{step} batch \d/3 · \d files?", n) for n in named
        )

    assert run.artifact(AUTOLOAD_KEY)["type"] == "table"
    assert run.table(AUTOLOAD_KEY) == autoload_rows(summary)

    # Our loggers reach the run's logs: the quarantined files, by a name safe to show.
    quarantine_lines = [log["message"] for log in run.logs if log["name"] == "dicomflow.autoload"]
    assert len(quarantine_lines) == sum(summary.quarantined.values())
    assert any("hashed-" in line for line in quarantine_lines)
    assert not run.leaks(originals)


@pytest.fixture
def qr_receiver(settings: Settings) -> Iterator[Receiver]:
    """Our receiver answering C-FIND from the (empty) catalog."""
    scp = start_receiver(
        ReceiverSettings(port=0), settings.landing, None, settings.served_archive()
    )
    try:
        yield scp
    finally:
        scp.stop(grace_seconds=2)


def test_pynetdicom_logs_reach_the_run_without_identifiers(
    prefect_harness, qr_receiver: Receiver, identifier_logging_on: None
) -> None:
    """A C-FIND naming a patient, made in a flow run: pynetdicom's INFO lines (both ends,
    the SCP being our receiver in this process) are in the run's logs, the name is not."""
    from pynetdicom import _config

    patient = {"PatientName": "Lestrade^Inspector", "PatientID": "SY-221B"}
    assert _config.LOG_REQUEST_IDENTIFIERS, "the run itself must switch it off"

    @flow(name="find-patient")
    def find_patient(port: int) -> int:
        with run_logs(flow_run.id):
            peer = peer_for(f"DICOMFLOW@127.0.0.1:{port}", {}, "LOGTEST", ScuSettings())
            found = find(peer, "patient", build_identifier("patient", "PATIENT", patient))
            return len(found.matches)

    state = find_patient(qr_receiver.port, return_state=True)
    assert state.result() == 0
    run = read_run(str(PREFECT_API_URL.value()), str(state.state_details.flow_run_id))
    messages = [log["message"] for log in run.logs if log["name"].startswith("pynetdicom")]
    assert "Sending Find Request: MsgID 1" in messages and "Association Released" in messages
    # made in the receiver's own threads, which Prefect knows nothing of
    assert "Accepting Association" in messages
    assert any(log["message"] == "C-FIND at PATIENT level: 0 matches" for log in run.logs)
    assert not run.leaks({*patient.values(), "Lestrade"})
