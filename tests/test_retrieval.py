"""The parts of retrieval that need no PACS: job lists, windows, the breaker, the ledger."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from receiver.move_ledger import MoveLedger
from tasks.anonymize import anonymize, archived_uids
from tasks.breaker import CircuitBreaker
from tasks.policy import build_policy
from tasks.pseudonyms import Pseudonymizer
from tasks.retrieval import (
    JobError,
    in_window,
    job_id_for,
    load_job,
    seconds_until_open,
    shortfall,
)


def test_job_from_csv_parquet_and_sql(tmp_path: Path) -> None:
    csv = tmp_path / "job.csv"
    csv.write_text("patientid,StudyDate,Comment\nP1,20240101-20240131,x\nP2,,y\n")
    requests = load_job(csv)
    assert [r.keys for r in requests] == [
        {"PatientID": "P1", "StudyDate": "20240101-20240131"},
        {"PatientID": "P2"},
    ]
    parquet = tmp_path / "job.parquet"
    pq.write_table(pa.table({"StudyInstanceUID": ["1.2.3", None]}), parquet)
    assert [r.keys for r in load_job(parquet)] == [{"StudyInstanceUID": "1.2.3"}, {}]
    sql = f"SELECT AccessionNumber FROM read_csv('{tmp_path / 'acc.csv'}')"
    (tmp_path / "acc.csv").write_text("AccessionNumber\nA1\nA2\n")
    assert [r.keys for r in load_job(sql=sql)] == [
        {"AccessionNumber": "A1"},
        {"AccessionNumber": "A2"},
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("Name\nx\n", "no StudyInstanceUID, AccessionNumber or PatientID column"),
        ("PatientID\n", "lists no studies"),
        ("PatientID,StudyDate\nP1,2024-01-01\n", "YYYYMMDD"),
        ("StudyInstanceUID\nnot-a-uid\n", "not a valid UID"),
    ],
)
def test_bad_jobs_say_why(tmp_path: Path, content: str, expected: str) -> None:
    job = tmp_path / "job.csv"
    job.write_text(content)
    with pytest.raises(JobError, match=expected):
        load_job(job)


def test_missing_and_unknown_job_files(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="not found"):
        load_job(tmp_path / "nothing.csv")
    (tmp_path / "job.xlsx").write_text("x")
    with pytest.raises(JobError, match=r"\.csv or \.parquet"):
        load_job(tmp_path / "job.xlsx")
    with pytest.raises(JobError, match="cannot read the job"):
        load_job(sql="SELECT * FROM no_such_table")


def test_job_id_is_stable_per_node_and_list(tmp_path: Path) -> None:
    job = tmp_path / "job.csv"
    job.write_text("StudyInstanceUID\n1.2.3\n1.2.4\n")
    requests = load_job(job)
    assert job_id_for("pacs", requests) == job_id_for("pacs", load_job(job))
    assert job_id_for("pacs", requests) != job_id_for("other", requests)
    assert job_id_for("pacs", requests) != job_id_for("pacs", requests[:1])


@pytest.mark.parametrize(
    ("window", "hour", "minute", "inside"),
    [
        (None, 12, 0, True),
        ("20:00-06:00", 21, 0, True),
        ("20:00-06:00", 5, 59, True),
        ("20:00-06:00", 6, 0, False),
        ("20:00-06:00", 12, 0, False),
        ("08:30-17:00", 8, 30, True),
        ("08:30-17:00", 17, 0, False),
    ],
)
def test_time_window(window: str | None, hour: int, minute: int, inside: bool) -> None:
    now = datetime(2026, 12, 4, hour, minute)
    assert in_window(window, now) is inside
    wait = seconds_until_open(window, now)
    assert (wait == 0) is inside
    if not inside:
        assert 0 < wait <= 24 * 3600 and in_window(
            window, now.fromtimestamp(now.timestamp() + wait)
        )


def test_breaker_opens_cools_down_and_closes(tmp_path: Path) -> None:
    breaker = CircuitBreaker(tmp_path / "pacs.json", failures=3, cooldown=600)
    assert not breaker.failure(now=1000) and not breaker.failure(now=1001)
    breaker.success()  # a success in between: the count starts again
    assert not breaker.failure(now=1002) and not breaker.failure(now=1003)
    assert breaker.failure(now=1004)
    assert breaker.open_until(now=1005) == 1604
    same_file = CircuitBreaker(tmp_path / "pacs.json", failures=3, cooldown=600)
    assert same_file.open_until(now=1500) == 1604  # another process sees it open
    assert breaker.open_until(now=1605) is None


def test_ledger_names_the_job_of_our_moves_only(tmp_path: Path) -> None:
    ledger = MoveLedger(tmp_path / "moves")
    with (
        ledger.opened("DICOMFLOW", "job-1") as first,
        ledger.opened("DICOMFLOW", "job-2") as second,
    ):
        assert first != second
        assert ledger.job_for("DICOMFLOW", first) == "job-1"
        assert ledger.job_for("DICOMFLOW  ", second) == "job-2"
        assert ledger.job_for("SOMEONE", first) is None
        assert ledger.job_for(None, first) is None
    assert ledger.job_for("DICOMFLOW", first) is None  # closed with its C-MOVE


@pytest.mark.parametrize("options", [[], ["retain-uids"]])
def test_archived_uids_are_what_anonymize_writes(options: list[str]) -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    policy, keys = build_policy(options, None), Pseudonymizer(b"test-salt")
    wanted = {
        k: str(ds[k].value) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    }
    predicted = archived_uids(policy, keys, wanted)
    anonymize(ds, policy, keys)
    assert predicted == {k: str(ds[k].value) for k in wanted}
    assert (predicted == wanted) is bool(options)


def test_shortfall_per_series() -> None:
    short = shortfall({"s1": 3, "s2": 2, "s3": 1}, {"s1": 3, "s2": 1})
    assert short.series == {"s2": (2, 1), "s3": (1, 0)}
    assert short.missing == 2
