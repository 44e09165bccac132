"""Nothing is lost when things fail: killed processes, full disks, peers that vanish,
stall or abort. Every test uses real processes and sockets; the disks really fill."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

import catalog
from flows.autoload import autoload, ingest_context
from flows.settings import Settings
from receiver.durable import TMP_SUFFIX
from receiver.landing import LandingZone
from receiver.scp import OUT_OF_RESOURCES, start_receiver
from receiver.settings import ReceiverSettings
from tasks.ingest import StorageUnavailable, archive_files
from tests.conftest import dcmtk_env, free_port, require_dcmtk
from tests.faults import grow, make_instances, receiver_process, tmpfs


def landed(settings: Settings) -> list[Path]:
    return LandingZone(settings.landing).completed()


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(TMP_SUFFIX)]


def assert_archived_exactly(settings: Settings, sop_uids: set[str]) -> None:
    """Every instance once in archive and catalog; landing and quarantine empty."""
    files = sorted(settings.archive.rglob("*.dcm"))
    con = catalog.connect(settings.catalog_store())
    rows = con.execute("SELECT sop_instance_uid FROM instances")
    recorded = [r[0] for r in rows.fetchall()]
    assert len(files) == len(sop_uids) == len(recorded) == len(set(recorded))
    assert {p.stem for p in files} == set(recorded)
    assert landed(settings) == []
    assert not settings.quarantine.exists() or not any(settings.quarantine.rglob("*.dcm"))
    assert partials(settings.archive) == []


def send(port: int, paths: list[Path], ae_title: str = "DICOMFLOW") -> list[int]:
    """C-STORE `paths` on one pynetdicom association; the status of each."""
    ae = AE(ae_title="FAULTSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(dcmread(p)).get("Status", -1)) for p in paths]
    finally:
        assoc.release()


def wait_until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# -- killed processes -----------------------------------------------------------------


def acknowledged(storescu_log: str) -> list[str]:
    """Files storescu got a Success response for, from its -v log."""
    done, current = [], None
    for line in storescu_log.splitlines():
        if m := re.search(r"Sending file: (\S+)", line):
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current:
            done.append(current)
    return done


def test_receiver_killed_mid_association_loses_nothing_acknowledged(
    prefect_harness, settings: Settings, tmp_path: Path
) -> None:
    require_dcmtk()
    corpus = make_instances(tmp_path / "corpus", 200)
    uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in corpus}
    port = free_port()
    storescu = ["storescu", "-v", "-aec", "DICOMFLOW", "127.0.0.1", str(port)]
    with receiver_process(port) as proc:
        sender = subprocess.Popen(
            [*storescu, *map(str, corpus)],
            env=dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert wait_until(lambda: len(landed(settings)) >= 40), "receiver too slow to start"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        log, _ = sender.communicate(timeout=60)
    assert sender.returncode != 0, "the sender should have seen the receiver die"
    acked = acknowledged(log)
    assert 40 <= len(acked) < 200
    # Every acknowledged instance is complete in the landing zone; what is there parses.
    on_disk = {}
    for path in landed(settings):
        ds = dcmread(path)
        assert len(ds.PixelData) == 128 * 128 * 2
        on_disk[str(ds.SOPInstanceUID)] = path
    for sent in acked:
        assert str(dcmread(sent, stop_before_pixels=True).SOPInstanceUID) in on_disk

    # The sender re-sends everything to the restarted receiver; autoload keeps one of each.
    with receiver_process(port):
        resent = subprocess.run(
            [*storescu, *map(str, corpus)], env=dcmtk_env(), capture_output=True, timeout=120
        )
    assert resent.returncode == 0
    summary = autoload()
    assert summary.archived == 200 and summary.duplicates == len(on_disk)
    assert_archived_exactly(settings, uids)


KILL_AFTER_FSYNCS = """
import os, signal, sys
limit, calls, real_fsync = int(sys.argv[1]), [0], os.fsync
def fsync(fd):
    calls[0] += 1
    if calls[0] == limit:
        os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)
os.fsync = fsync
from flows.autoload import autoload
autoload()
"""


def test_autoload_killed_at_every_step_then_rerun_archives_each_once(
    prefect_harness, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kill autoload before its 1st, 2nd, ... durable step (every fsync) until a run completes.

    Each killed run dies at a different point: mid archive write, after an archive
    rename, after catalog parts, between landing deletes. The next run must repair.
    """
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("DICOMFLOW_AUTOLOAD__BATCH_SIZE", "3")
    corpus = make_instances(tmp_path / "corpus", 5, side=32)
    zone = LandingZone(settings.landing)
    for path in corpus + corpus[:1]:  # one instance received twice
        zone.store(path.read_bytes())
    uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in corpus}
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    kills = 0
    for limit in range(1, 200, 3):
        run = subprocess.run(
            [sys.executable, "-c", KILL_AFTER_FSYNCS, str(limit)],
            env=env, capture_output=True, text=True, timeout=120,
        )
        if run.returncode == 0:
            break
        assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
        kills += 1
    else:
        pytest.fail("autoload never completed")
    assert kills >= 5, f"only {kills} kill points reached"
    autoload()  # one more run after the last crash changes nothing
    assert_archived_exactly(settings, uids)


# -- full disks -----------------------------------------------------------------------


def test_full_landing_answers_out_of_resources_and_recovers(
    settings: Settings, tmp_path: Path
) -> None:
    corpus = make_instances(tmp_path / "corpus", 8, side=512)  # ~530 KB each
    with tmpfs(settings.landing, "2m"):
        scp = start_receiver(ReceiverSettings(port=0, min_free_bytes=0), settings.landing)
        try:
            statuses = send(scp.port, corpus)
            assert 0 < statuses.count(0) < len(corpus)
            assert set(statuses) == {0, OUT_OF_RESOURCES}
            kept = landed(settings)
            assert len(kept) == statuses.count(0)
            for path in kept:  # no truncated file under a complete name
                assert len(dcmread(path).PixelData) == 512 * 512 * 2
            assert partials(settings.landing) == []
            # Space returns (autoload took the files): the receiver takes more by itself.
            for path in kept:
                path.unlink()
            assert send(scp.port, corpus[:2]) == [0, 0]
        finally:
            scp.stop(grace_seconds=2)


def test_landing_keeps_its_reserve(settings: Settings, tmp_path: Path) -> None:
    corpus = make_instances(tmp_path / "corpus", 6, side=512)
    with tmpfs(settings.landing, "4m"):
        reserve = 2 * 2**20
        scp = start_receiver(ReceiverSettings(port=0, min_free_bytes=reserve), settings.landing)
        try:
            statuses = send(scp.port, corpus)
        finally:
            scp.stop(grace_seconds=2)
        assert statuses.count(0) == 3 and statuses[3:] == [OUT_OF_RESOURCES] * 3
        assert shutil.disk_usage(settings.landing).free >= reserve


def test_full_archive_stops_the_batch_and_keeps_every_landed_file(
    prefect_harness, settings: Settings, tmp_path: Path
) -> None:
    corpus = make_instances(tmp_path / "corpus", 6, side=512)
    zone = LandingZone(settings.landing)
    for path in corpus:
        zone.store(path.read_bytes())
    with tmpfs(settings.archive, "1m"):
        with pytest.raises(StorageUnavailable, match="archive write"):
            archive_files(landed(settings), ingest_context(settings, "full-disk"))
        assert len(landed(settings)) == 6
        assert partials(settings.archive) == []
        assert not settings.quarantine.exists() or not any(settings.quarantine.rglob("*"))
        grow(settings.archive, "64m")
        autoload()
        uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in corpus}
        assert_archived_exactly(settings, uids)


# -- peers that vanish, stall or abort ----------------------------------------------------


@pytest.fixture
def quick_receiver(settings: Settings):
    scp = start_receiver(
        ReceiverSettings(port=0, network_timeout=1.0, dimse_timeout=2.0, acse_timeout=2.0),
        settings.landing,
    )
    yield scp
    scp.stop(grace_seconds=2)


def open_association(port: int):
    ae = AE(ae_title="FAULTSCU")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMFLOW")
    assert assoc.is_established
    return assoc


def half_a_c_store(assoc) -> None:
    """Send a P-DATA-TF PDU that promises 200 kB and delivers 1 kB."""
    context_id = assoc.accepted_contexts[0].context_id
    pdv = struct.pack(">IBB", 200_000 - 4, context_id, 0x00) + b"\0" * 1000
    pdu = struct.pack(">BBI", 0x04, 0x00, 200_000 + 2) + pdv
    assoc.dul.socket.socket.sendall(pdu)


def slots_drain(scp) -> bool:
    return wait_until(lambda: not scp.ae.active_associations, timeout=15)


def test_sender_vanishing_mid_transfer_leaves_nothing(quick_receiver, settings) -> None:
    assoc = open_association(quick_receiver.port)
    half_a_c_store(assoc)
    assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)
    assoc.dul.socket.socket.close()
    assert slots_drain(quick_receiver)
    assert landed(settings) == [] and partials(settings.landing) == []
    assoc.kill()


def test_stalled_sender_is_cut_off_by_the_idle_timeout(quick_receiver, settings) -> None:
    stalled = open_association(quick_receiver.port)
    half_a_c_store(stalled)  # then silence, mid-PDU
    idle = open_association(quick_receiver.port)  # and one that never sends anything
    assert slots_drain(quick_receiver)
    assert landed(settings) == [] and partials(settings.landing) == []
    stalled.kill()
    idle.kill()
    fresh = open_association(quick_receiver.port)
    assert fresh.send_c_echo().Status == 0
    fresh.release()


def test_a_abort_mid_c_store_frees_the_slot(quick_receiver, settings, tmp_path) -> None:
    (big,) = make_instances(tmp_path / "big", 1, side=1024)
    assoc = open_association(quick_receiver.port)
    sending = threading.Thread(target=lambda: assoc.send_c_store(dcmread(big)), daemon=True)
    sending.start()
    time.sleep(0.05)
    assoc.abort()
    sending.join(timeout=3)
    assert slots_drain(quick_receiver)
    assert partials(settings.landing) == []
    for path in landed(settings):  # if the store won the race, it is whole
        assert len(dcmread(path).PixelData) == 1024 * 1024 * 2
