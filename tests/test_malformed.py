"""The malformed corpus (tests/malformed.py) through both doors: the network and the landing zone.

Over a real socket, each broken dataset gets its C-STORE status and the receiver
goes on; dropped into landing, each file is archived or quarantined with a reason
file beside it; the autoload flow gets through all of them in one run. Memory stays
within a few megabytes whatever a file's lengths claim.
"""

from __future__ import annotations

import json
import logging
import time
import tracemalloc
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, _config
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification

import tasks.parse
from flows.autoload import autoload
from flows.settings import Settings
from receiver.landing import LandingZone
from receiver.scp import Receiver, check_received
from tasks.ingest import IngestContext, archive_files, clear_landing, record_instances
from tests.malformed import (
    ARCHIVED,
    NOT_SENDABLE,
    REFUSED_IN_NEGOTIATION,
    Malformed,
    corpus,
    file,
)

CASES = corpus()
MAX_TRACED = 48 * 2**20
"""Python allocations while one case is handled: its file is at most a third of this."""


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    """pydicom warns about every odd value, quoting it; pynetdicom logs every abort."""
    loggers = [logging.getLogger(n) for n in ("pydicom", "pynetdicom")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def test_the_corpus_covers_what_the_issue_lists() -> None:
    names = {c.name for c in CASES}
    assert len(CASES) >= 30
    for needed in (
        "zero-byte",
        "random-garbage",
        "truncated-in-pixels",
        "no-file-meta",
        "meta-unknown-transfer-syntax",
        "patient-name-as-us",
        "sequence-never-ends",
        "huge-length-in-header",
        "huge-pixel-data-length",
        "sequences-nested-300-undefined-length",
        "sequences-nested-1000-defined-length",
        "instance-uid-with-letters",
        "sop-class-not-the-negotiated-one",
        "dicomdir",
        "deflate-bomb",
    ):
        assert needed in names
    assert {c.landing for c in CASES} >= {ARCHIVED, "not-dicom", "truncated", "too-deep"}


def _land(ctx: IngestContext, case: Malformed) -> Path:
    landing = ctx.archive_dir.parent / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / f"{case.name}.dcm"
    path.write_bytes(case.file)
    return path


def _reasons(folder: Path) -> dict[str, dict[str, str]]:
    return {
        json.loads(p.read_text())["landed_name"]: json.loads(p.read_text())
        for p in folder.glob("*.reason.json")
    }


@pytest.mark.parametrize("streamed", [False, True], ids=["read-whole", "streamed"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_malformed_file_in_landing_is_archived_or_quarantined(
    ctx: IngestContext, monkeypatch: pytest.MonkeyPatch, case: Malformed, streamed: bool
) -> None:
    """`streamed` reads every file as a large one would be: header only, pixels copied."""
    if streamed:
        monkeypatch.setattr(tasks.parse, "STREAM_THRESHOLD", 0)
    path = _land(ctx, case)
    tracemalloc.start()
    try:
        outcome = archive_files([path], ctx)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    record_instances(outcome.archived, ctx.catalog_dir)
    clear_landing(outcome.archived)
    assert peak < MAX_TRACED, f"{peak / 2**20:.0f} MiB traced"
    assert not path.exists()
    if case.landing == ARCHIVED:
        assert outcome.new == 1 and not outcome.quarantined
        assert len(list(ctx.archive_dir.rglob("*.dcm"))) == 1
        return
    assert dict(outcome.quarantined) == {case.landing: 1}
    record = _reasons(ctx.quarantine_dir)[path.name]
    assert record["reason"] == case.landing and record["detail"]
    (kept,) = ctx.quarantine_dir.glob("*.dcm")
    assert kept.read_bytes() == case.file  # set aside as it came, beside its reason
    assert (ctx.quarantine_dir / f"{kept.stem}.reason.json").is_file()
    assert not list(ctx.archive_dir.rglob("*.dcm"))


def test_one_autoload_run_gets_through_the_whole_corpus(
    prefect_harness, settings: Settings
) -> None:
    landing = LandingZone(settings.landing)
    settings.landing.mkdir(parents=True)
    for case in CASES:
        (settings.landing / f"{case.name}.dcm").write_bytes(case.file)
    summary = autoload()
    expected = Counter(c.landing for c in CASES if c.landing != ARCHIVED)
    assert summary.quarantined == dict(expected)
    assert summary.archived == sum(c.landing == ARCHIVED for c in CASES)
    assert summary.recorded == summary.archived
    assert landing.completed() == []
    reasons = _reasons(settings.quarantine)
    assert {name: r["reason"] for name, r in reasons.items()} == {
        f"{c.name}.dcm": c.landing for c in CASES if c.landing != ARCHIVED
    }


def _send(case: Malformed, port: int, folder: Path) -> int:
    """C-STORE the case's dataset bytes as they are, over their own association."""
    path = folder / f"{case.name}.send"
    path.write_bytes(file(case.dataset, case.sop_class, case.sop_instance, case.transfer_syntax))
    ae = AE(ae_title="MALFORMED")
    ae.add_requested_context(case.sop_class, case.transfer_syntax)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMFLOW")
    if not assoc.accepted_contexts:  # pynetdicom aborts an association without one
        assert assoc.rejected_contexts, f"{case.name}: association failed"
        return REFUSED_IN_NEGOTIATION
    assert assoc.is_established, case.name
    try:
        try:
            reply = assoc.send_c_store(path)  # chunked: the bytes after the file meta, unparsed
        except ValueError:
            return NOT_SENDABLE
        assert "Status" in reply, f"{case.name}: no response"
        return int(reply.Status)
    finally:
        if assoc.is_established:
            assoc.release()


def test_each_malformed_dataset_over_the_network_gets_its_status(
    receiver: Receiver,
    settings: Settings,
    ctx: IngestContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    statuses = {case.name: _send(case, receiver.port, tmp_path) for case in CASES}
    expected = {case.name: case.status for case in CASES}
    wrong = {
        n: (f"{s:#06x}", f"{expected[n]:#06x}") for n, s in statuses.items() if s != expected[n]
    }
    assert not wrong, f"(got, expected): {wrong}"

    # The receiver is still there, every association ended, no temporary file is left.
    echo = AE(ae_title="AFTER")
    echo.add_requested_context(Verification)
    assoc = echo.associate("127.0.0.1", receiver.port, ae_title="DICOMFLOW")
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()
    deadline = time.monotonic() + 30
    while receiver.ae.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.ae.active_associations == []
    assert [p.name for p in settings.landing.iterdir() if p.name.startswith(".")] == []
    stored = sum(s == 0x0000 for s in statuses.values())
    landed = LandingZone(settings.landing).completed()
    assert len(landed) == stored == receiver.counter.stored

    # What the receiver took, autoload archives or quarantines with a reason.
    outcome = archive_files(landed, ctx)
    assert outcome.new + sum(outcome.quarantined.values()) == stored
    assert len(_reasons(ctx.quarantine_dir)) == sum(outcome.quarantined.values())


def test_checking_a_received_dataset_takes_bounded_memory(tmp_path: Path) -> None:
    """What the receiver does with each dataset before answering, under tracemalloc."""
    request = C_STORE()
    worst = 0
    for case in CASES:
        path = tmp_path / f"{case.name}.received"
        path.write_bytes(
            file(case.dataset, case.sop_class, case.sop_instance, case.transfer_syntax)
        )
        request.AffectedSOPClassUID = case.sop_class
        if len(case.sop_instance) <= 64:
            request.AffectedSOPInstanceUID = case.sop_instance
        tracemalloc.start()
        try:
            check_received(path, request)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        worst = max(worst, peak)
    assert worst < MAX_TRACED, f"{worst / 2**20:.0f} MiB traced"
