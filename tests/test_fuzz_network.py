"""Random and mutated PDUs over raw sockets (tests/pdus.py): the receiver answers C-ECHO after.

The fuzz run is seeded and bounded (300 connections). Each failure mode it found in
pynetdicom has its own test below: an exception in pynetdicom's reader thread used
to end that thread silently, leaving the peer unanswered and the slot held until a
timeout.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from flows.settings import Settings
from receiver.scp import Receiver, start_receiver
from receiver.settings import ReceiverSettings
from tests.pdus import (
    ABORT_RQ,
    ECHO_RQ,
    RELEASE_RQ,
    associate_rq,
    cases,
    command,
    p_data,
    store_rq,
)

SEED = 20240611
COUNT = 300
WORKERS = 3


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Exceptions that end any thread while the test runs."""
    seen: list[str] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        seen.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}")

    monkeypatch.setattr(threading, "excepthook", hook)
    return seen


def _receiver(settings: Settings, seconds: float) -> Iterator[Receiver]:
    scp = start_receiver(
        ReceiverSettings(
            port=0,
            max_associations=12,
            acse_timeout=seconds,
            dimse_timeout=seconds,
            network_timeout=seconds,
        ),
        settings.landing,
    )
    try:
        yield scp
    finally:
        scp.stop(grace_seconds=2)


@pytest.fixture
def quick(settings: Settings) -> Iterator[Receiver]:
    """Timeouts of 5 s, so connections fuzzing leaves hanging end soon."""
    yield from _receiver(settings, 5)


@pytest.fixture
def patient(settings: Settings) -> Iterator[Receiver]:
    """Timeouts of 60 s: what ends an association in a test is our handling, not a timer."""
    yield from _receiver(settings, 60)


def _exchange(port: int, pdus: list[bytes]) -> bytes:
    """Send PDU by PDU (waiting briefly for the answer to an A-ASSOCIATE-RQ, and after the
    last); what came back. Fuzzing asserts nothing about the answers, only the aftermath."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for i, pdu in enumerate(pdus):
            try:
                sock.sendall(pdu)
                if pdu[:1] == b"\x01" or i == len(pdus) - 1:
                    sock.settimeout(0.3 if pdu[:1] == b"\x01" else 0.05)
                    got += sock.recv(65536)
            except OSError:
                break
    return got


def _read_pdu(sock: socket.socket, seconds: float = 20) -> int | None:
    """The type of the next PDU from the receiver (read whole), None once it closes."""
    sock.settimeout(seconds)

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n and (chunk := sock.recv(n - len(data))):
            data += chunk
        return data

    head = exactly(6)
    if len(head) < 6:
        return None
    kind, _, length = struct.unpack(">BBL", head)
    exactly(length)
    return kind


def _until_abort(sock: socket.socket) -> list[int]:
    """The PDU types the receiver sends up to an A-ABORT (after which it waits for our
    close) or its own close."""
    kinds: list[int] = []
    while (kind := _read_pdu(sock)) is not None:
        kinds.append(kind)
        if kind == 0x07:
            break
    return kinds


def _open_connections(port: int) -> int:
    """This process's connected sockets on `port` (the receiver's side), from /proc."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] != "0A" and fields[9] in inodes:
                count += 1
    return count


def _drained(scp: Receiver, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not scp.ae.active_associations and _open_connections(scp.port) == 0:
            return True
        time.sleep(0.1)
    return False


def _echo(port: int) -> int:
    ae = AE(ae_title="AFTER_FUZZ")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMFLOW")
    assert assoc.is_established
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def test_fuzzed_pdus_leave_the_receiver_answering(
    quick: Receiver, settings: Settings, thread_errors: list[str]
) -> None:
    assert _echo(quick.port) == 0x0000
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda pdus: _exchange(quick.port, pdus), cases(SEED, COUNT)))
    assert _echo(quick.port) == 0x0000
    assert _drained(quick), f"{len(quick.ae.active_associations)} associations still held"
    assert thread_errors == []
    assert [p.name for p in settings.landing.iterdir()] == []  # nothing landed, nothing partial


def test_an_undecodable_command_aborts_the_association(
    patient: Receiver, thread_errors: list[str]
) -> None:
    unknown = command(CommandField=0xFFFF, MessageID=1, CommandDataSetType=0x0101)
    with socket.create_connection(("127.0.0.1", patient.port), timeout=10) as sock:
        sock.sendall(associate_rq())
        assert _read_pdu(sock) == 0x02  # A-ASSOCIATE-AC
        sock.sendall(p_data(1, 3, unknown))
        assert _until_abort(sock) == [0x07]
    assert _drained(patient) and thread_errors == []
    assert _echo(patient.port) == 0x0000


def test_an_even_presentation_context_id_aborts_at_once(
    patient: Receiver, thread_errors: list[str]
) -> None:
    with socket.create_connection(("127.0.0.1", patient.port), timeout=10) as sock:
        sock.sendall(associate_rq(first_id=2))  # presentation context ids must be odd
        assert _until_abort(sock) == [0x07]
    assert _drained(patient) and thread_errors == []


def test_an_abort_with_an_unknown_source_frees_the_slot(
    patient: Receiver, thread_errors: list[str]
) -> None:
    abort = bytearray(ABORT_RQ)
    abort[8] = 0x2B  # source: 0, 1 or 2 only
    with socket.create_connection(("127.0.0.1", patient.port), timeout=10) as sock:
        sock.sendall(associate_rq())
        assert _read_pdu(sock) == 0x02
        sock.sendall(bytes(abort))
        assert _until_abort(sock) in ([], [0x07])
    assert _drained(patient) and thread_errors == []


def test_a_store_cut_off_midway_leaves_no_file(
    patient: Receiver, settings: Settings, thread_errors: list[str]
) -> None:
    with socket.create_connection(("127.0.0.1", patient.port), timeout=10) as sock:
        sock.sendall(associate_rq())
        assert _read_pdu(sock) == 0x02
        sock.sendall(p_data(3, 3, store_rq(7)))
        sock.sendall(p_data(3, 0, bytes(20000)))  # a first dataset fragment, never the last
        deadline = time.monotonic() + 10
        while not [p for p in settings.landing.iterdir()] and time.monotonic() < deadline:
            time.sleep(0.02)
        partial = [p.name for p in settings.landing.iterdir()]
        assert len(partial) == 1 and partial[0].endswith(".partial")  # receiving into landing
    assert _drained(patient) and thread_errors == []
    assert list(settings.landing.iterdir()) == []
    assert _echo(patient.port) == 0x0000


def test_the_hand_made_pdus_make_a_real_echo(patient: Receiver) -> None:
    """What the fuzzer mutates is a well-formed association and C-ECHO to begin with."""
    with socket.create_connection(("127.0.0.1", patient.port), timeout=10) as sock:
        sock.sendall(associate_rq())
        assert _read_pdu(sock) == 0x02  # A-ASSOCIATE-AC
        sock.sendall(p_data(1, 3, ECHO_RQ))
        assert _read_pdu(sock) == 0x04  # P-DATA-TF: the C-ECHO-RSP
        sock.sendall(RELEASE_RQ)
        assert _read_pdu(sock) == 0x06  # A-RELEASE-RP
