"""Our subclasses of pynetdicom's upper layer (DUL) and DIMSE providers, per association.

They add three things to pynetdicom's own: a dataset lands straight in the landing
zone as it arrives; a malformed PDU or message aborts the association instead of
killing a reader thread; and both reactors wait for work instead of polling.

pynetdicom's reactors poll: its DUL thread sleeps ``_run_loop_delay`` (1 ms) whenever a
loop found nothing to do, and its association thread sleeps 1 ms before each look at
the message queue. On loopback a PDU often arrives just after the DUL looked, so a
C-STORE of a 531 KB CT image waited several of those sleeps. Here the DUL blocks in
``select()`` on its socket and on a wake-up socket that every outgoing primitive (and
a kill) rings, and the association thread blocks on the DIMSE message queue: each
wakes the moment there is something to do, and sleeps soundly when there is not.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import select
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import dimse_messages
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF

from receiver.landing import LandingZone, PartialFile
from receiver.logtext import printable

LOGGER = logging.getLogger("dicomflow.receiver")

IDLE_WAIT = 0.005
"""Longest a reactor blocks with nothing to do (s): bounds how late it notices a timer,
a release request or a closed connection; new data and new work wake it at once."""

_INCOMING = threading.local()
"""How the association whose reader thread this is opens a landing file, while it reads."""

_PYNETDICOM_TEMPORARY_FILE = dimse_messages.NamedTemporaryFile


def incoming_file(*args: Any, **kwargs: Any) -> Any:
    """Where pynetdicom writes an incoming C-STORE dataset (``STORE_RECV_CHUNKED_DATASET``).

    For our associations, a temporary file in their landing zone, so the landed file
    is only a rename away; for any other pynetdicom server in the process, what
    pynetdicom itself would use.
    """
    opener: Callable[[], PartialFile] | None = getattr(_INCOMING, "open", None)
    if opener is None:
        return _PYNETDICOM_TEMPORARY_FILE(*args, **kwargs)
    return opener()


def unfinished_files(assoc: Association) -> list[PartialFile]:
    """Landing files of C-STOREs this association received in part, or did not serve."""
    dimse = assoc.dimse
    found = [getattr(dimse.message, "_data_set_file", None)]
    found += [getattr(p, "_dataset_file", None) for _, p in list(dimse.msg_queue.queue)]
    return [f for f in found if isinstance(f, PartialFile)]


class Wakeup:
    """A socket pair one thread waits on in ``select()`` and others ring.

    Ringing after `close()` does nothing: the lock keeps a late ring from writing to
    a file descriptor number the process has since given to another file.
    """

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int:
        return self._reader.fileno()

    def ring(self) -> None:
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(OSError):  # full: a ring is already pending
                self._writer.send(b"\0")

    def clear(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except OSError:  # drained
            pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._reader.close()
            self._writer.close()


class ReceiverDUL(DULServiceProvider):
    """pynetdicom's upper layer provider, for one of our associations.

    A PDU that decodes but whose parameters pynetdicom then refuses (an even
    presentation context id in an A-ASSOCIATE-RQ, an unknown source in an A-ABORT)
    raises inside pynetdicom's reader thread, which dies without a word to the peer
    and holds the association slot until a timeout. Checked here, while decoding,
    it counts as an invalid PDU: the peer gets an A-ABORT at once.

    Installed on a new association by `adopt`, before its reader thread starts.
    """

    _wakeup: Wakeup

    @classmethod
    def adopt(cls, dul: DULServiceProvider) -> None:
        """Make pynetdicom's provider ours: its state and timers stay, its loop waits."""
        dul.__class__ = cls
        assert isinstance(dul, ReceiverDUL)
        dul._wakeup = Wakeup()
        dul._run_loop_delay = 0  # the wait happens in select(), see _is_transport_event

    def _decode_pdu(self, bytestream: bytearray) -> tuple[Any, str]:
        pdu, event = super()._decode_pdu(bytestream)
        if not isinstance(pdu, P_DATA_TF):  # data PDUs are checked as DIMSE messages
            # Raises what the state machine would, in a safe place. The state machine
            # then gets this same primitive: an A-ASSOCIATE-RQ proposing a hundred
            # contexts takes milliseconds to convert, once is enough.
            primitive = pdu.to_primitive()
            pdu.to_primitive = lambda: primitive  # type: ignore[method-assign,assignment]
        return pdu, event

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wakeup.ring()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wakeup.ring()

    def _is_transport_event(self) -> bool:
        self._wait_for_work()
        return super()._is_transport_event()

    def _wait_for_work(self) -> None:
        """Block until the peer sends, a primitive is queued or `IDLE_WAIT` passes."""
        if not (self.event_queue.empty() and self.to_provider_queue.empty()):
            return
        sock = self.socket.socket if self.socket is not None else None
        if sock is None or sock.fileno() < 0:
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes already buffered: select() cannot see them
        try:
            select.select([sock.fileno(), self._wakeup.fileno()], [], [], IDLE_WAIT)
        except (OSError, ValueError):  # closed meanwhile: pynetdicom's check will see it
            return
        self._wakeup.clear()

    def run(self) -> None:
        """The reader thread; if pynetdicom's state machine still raises, close the socket.

        (A peer's release request crossing our abort makes it raise, for one.) The
        closed connection ends the association and frees its slot at once.
        """
        try:
            super().run()
        except Exception as exc:
            LOGGER.error(
                "closing the connection with %s: %s: %s",
                printable(self.assoc.requestor.ae_title),
                type(exc).__name__,
                printable(str(exc))[:200],
            )
            if self.socket is not None:
                self.socket.close()
        finally:
            self._wakeup.close()


class ReceiverDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE service provider, for one of our associations.

    An incoming dataset is written into the association's landing zone (see
    `incoming_file`). A message pynetdicom cannot decode (an unknown command, a
    command set missing its fields) raises inside pynetdicom's reader thread, which
    then dies without a word to the peer; here it aborts the association instead
    (an invalid PDU, PS3.8 9.2), with one log line.
    """

    def __init__(self, assoc: Association, landing: LandingZone, keep_free: int = 0) -> None:
        super().__init__(assoc)
        self.open_partial = functools.partial(landing.open_partial, keep_free)

    def get_msg(self, block: bool = False) -> Any:
        """The next message; a non-blocking look (the association reactor's) waits briefly.

        pynetdicom's acceptor reactor sleeps 1 ms, then looks; waiting on the queue
        instead wakes it the moment the reader thread completes a message.
        """
        if block:
            return super().get_msg(block=True)
        try:
            return self.msg_queue.get(timeout=IDLE_WAIT)
        except queue.Empty:
            return None, None

    def receive_primitive(self, primitive: Any) -> None:
        _INCOMING.open = self.open_partial
        try:
            super().receive_primitive(primitive)
        except Exception as exc:
            calling_ae = printable(self.assoc.requestor.ae_title)
            LOGGER.error(
                "aborting the association with %s: undecodable DIMSE message (%s: %s)",
                calling_ae,
                type(exc).__name__,
                printable(str(exc))[:200],
            )
            partial = getattr(self.message, "_data_set_file", None)
            if isinstance(partial, PartialFile):
                partial.discard()
            self.message = None
            self.dul.event_queue.put("Evt19")  # unrecognised or invalid PDU
        finally:
            _INCOMING.open = None
