"""The Storage SCP: Verification and Storage service classes over pynetdicom.

Set-up is explicit, in the style of pynetdicom's ``apps/storescp``: the AE is
built from `ReceiverSettings` in `build_ae`, handlers are bound with their
dependencies in `make_server`, and nothing is configured at import time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import socket
import ssl
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from pydicom._uid_dict import UID_dictionary  # the data dictionary of UIDs
from pydicom.uid import UID, AllTransferSyntaxes, MediaStorageDirectoryStorage
from pynetdicom import AE, VerificationPresentationContexts, _config, dimse_messages, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import _STORAGE_CLASSES, register_uid, uid_to_service_class
from pynetdicom.status import Status
from pynetdicom.transport import ThreadedAssociationServer

from receiver import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, access, qr_scp
from receiver.access import AccessError, AccessPolicy, access_policy
from receiver.audit import audit
from receiver.dicomfile import Unreadable, read_file
from receiver.landing import LandingZone, PartialFile
from receiver.logtext import printable
from receiver.move_ledger import MoveLedger
from receiver.providers import ReceiverDIMSE, ReceiverDUL, incoming_file, unfinished_files
from receiver.qr_scp import Archive, qr_contexts
from receiver.settings import ReceiverSettings
from receiver.space import NoRoom
from receiver.tls import TlsError, server_context

LOGGER = logging.getLogger("dicomflow.receiver")
RECEIPTS = logging.getLogger("dicomflow.receipts")

OUT_OF_RESOURCES = 0xA700
"""Storage status "Refused: Out of Resources" (PS3.4 Table B.2-1): the landing write failed."""

SOP_CLASS_NOT_SUPPORTED = 0x0122
"""Status "Refused: SOP Class Not Supported" (PS3.7 C.4.2): the command names a SOP class
other than the one its presentation context was negotiated for."""

CANNOT_UNDERSTAND = 0xC000
"""Storage status "Error: Cannot Understand" (PS3.4 Table B.2-1): the request itself failed,
or its dataset does not parse, or does not name its SOP class and instance."""

DOES_NOT_MATCH_SOP_CLASS = 0xA900
"""Storage status "Error: Data Set Does Not Match SOP Class" (PS3.4 Table B.2-1): the dataset
names another SOP class or instance than its C-STORE command does."""

DEFER_SIZE = 256 * 1024
"""Values larger than this are skipped, not read, when a received dataset is checked."""


def _dictionary_only_storage_classes() -> tuple[UID, ...]:
    """Storage SOP classes in pydicom's UID dictionary that pynetdicom has no service for.

    Mostly retired ones a modality may still send, such as NM (1.2.840.10008.5.1.4.1.1.5)
    and US (.6) Image Storage.
    """
    found = []
    for uid, (name, kind, *_) in UID_dictionary.items():
        if kind != "SOP Class" or "Storage" not in name or "Commitment" in name:
            continue
        if uid != MediaStorageDirectoryStorage and uid_to_service_class(uid) is ServiceClass:
            found.append(UID(uid))
    return tuple(found)


DICTIONARY_ONLY_STORAGE_CLASSES = _dictionary_only_storage_classes()

STORAGE_SOP_CLASSES: tuple[UID, ...] = (
    *(UID(uid) for uid in _STORAGE_CLASSES.values()),
    *DICTIONARY_ONLY_STORAGE_CLASSES,
)
"""Every storage SOP class pynetdicom or pydicom's dictionary knows (PS3.4 Annex B)."""

TRANSFER_SYNTAXES: tuple[UID, ...] = tuple(AllTransferSyntaxes)
"""Every transfer syntax pydicom knows; instances are stored as received, never transcoded."""


def storage_contexts(get_scu: bool = False) -> list[PresentationContext]:
    """SCP contexts for all storage SOP classes with all transfer syntaxes.

    With `get_scu`, a requestor may also take the Storage SCP role (SCP/SCU Role
    Selection, PS3.7 D.3.3.4), which C-GET needs to receive on its own association.
    """
    contexts = [build_context(uid, list(TRANSFER_SYNTAXES)) for uid in STORAGE_SOP_CLASSES]
    if get_scu:
        for context in contexts:
            context.scu_role, context.scp_role = True, True
    return contexts


def build_ae(settings: ReceiverSettings, serve_archive: bool = False) -> AE:
    """The Application Entity for receiving (and, with `serve_archive`, Q/R SCP)."""
    ae = AE(ae_title=settings.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.maximum_pdu_size = settings.max_pdu
    ae.maximum_associations = settings.max_associations
    ae.require_called_aet = settings.require_called_ae_title
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    contexts = VerificationPresentationContexts + storage_contexts(get_scu=serve_archive)
    for cx in contexts + (qr_contexts() if serve_archive else []):
        # one by one: the `supported_contexts` setter would drop the roles
        ae.add_supported_context(
            cast(UID, cx.abstract_syntax),
            cx.transfer_syntax,
            scu_role=cx.scu_role,
            scp_role=cx.scp_role,
        )
    return ae


def configure_pynetdicom() -> None:
    """Set pynetdicom's process-wide switches; called once at start-up, never at import."""
    for uid in DICTIONARY_ONLY_STORAGE_CLASSES:
        register_storage_class(uid)
    # Identifiers hold patient data: keep them out of the logs.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    # C-STORE datasets go to a file as they arrive, never whole into memory.
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = incoming_file


class NoDelayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with TCP_NODELAY on every accepted socket.

    Without it each small PDU of a C-STORE response can wait for Nagle's algorithm.
    Reads time out after the network timeout, even in the middle of a PDU. With TLS,
    the handshake runs in the connection's own thread, bounded by the ACSE timeout,
    not in the accept loop, where one silent client would stall everyone.
    """

    reuse_port = False
    """Let sibling processes listen on the same port (SO_REUSEPORT)."""

    def server_bind(self) -> None:
        if self.reuse_port and self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # pynetdicom's idle timer runs between PDUs only: a peer that stops halfway
        # through one would block its reader forever without a socket timeout.
        client.settimeout(self.ae.network_timeout)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            timeout = request.gettimeout()
            request.settimeout(self.ae.acse_timeout)
            try:
                request.do_handshake()
            except (OSError, ValueError) as exc:
                peer = f"{client_address[0]}:{client_address[1]}"
                reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
                LOGGER.warning("TLS handshake with %s failed: %s", peer, reason)
                audit("tls-failed", peer=peer, reason=reason)
                self.shutdown_request(request)
                return
            request.settimeout(timeout)
        super().finish_request(request, client_address)


class QuickCopyContexts(list[PresentationContext]):
    """The server's supported presentation contexts, copied quickly for each association.

    pynetdicom gives every new association a ``deepcopy`` of them; for our ~200
    storage SOP classes with every transfer syntax that took about 100 ms, before
    the A-ASSOCIATE-AC could go out. A context's attributes are flags, numbers and
    immutable UIDs: copying each context and its list of syntaxes is a full copy.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        return [_copy_context(cx) for cx in self]


def _copy_context(context: PresentationContext) -> PresentationContext:
    copied = copy.copy(context)
    copied._transfer_syntax = list(context._transfer_syntax)
    return copied


class SharedPortServer(NoDelayServer):
    """The server of one receiver process among several on one port."""

    reuse_port = True


@dataclass
class ReceiptCounter:
    """Counts of C-STORE outcomes, for status output and tests."""

    stored: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, ok: bool) -> None:
        with self.lock:
            if ok:
                self.stored += 1
            else:
                self.failed += 1


class AssociationIds:
    """A short random id per association, so receipts of one association can be grouped.

    Held weakly: an association that ends takes its id with it.
    """

    def __init__(self) -> None:
        self._ids: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def of(self, assoc: object) -> str:
        with self._lock:
            found = self._ids.get(assoc)
            if found is None:
                found = self._ids[assoc] = uuid.uuid4().hex[:16]
            return found


def is_unknown_sop_class(uid: str) -> bool:
    """Neither in pydicom's UID dictionary nor in our storage classes: private or newer."""
    return not UID(uid).keyword and uid not in STORAGE_SOP_CLASSES


_REGISTRY_LOCK = threading.Lock()

MAX_UNKNOWN_CLASSES = 1000
"""Unknown SOP classes registered per process; a peer cannot grow the registry past it."""

_REGISTRY_LIMIT = len(_STORAGE_CLASSES) + len(DICTIONARY_ONLY_STORAGE_CLASSES) + MAX_UNKNOWN_CLASSES


def register_storage_class(uid: str) -> bool:
    """Make pynetdicom dispatch C-STOREs of `uid` to its Storage service class.

    Returns False, registering nothing, once `MAX_UNKNOWN_CLASSES` are registered.
    """
    with _REGISTRY_LOCK:
        if uid in _STORAGE_CLASSES.values():
            return True
        if len(_STORAGE_CLASSES) >= _REGISTRY_LIMIT:
            return False
        digest = hashlib.sha256(uid.encode()).hexdigest()[:16]
        keyword = UID(uid).keyword or f"UnknownStorage_{digest}"
        register_uid(uid, keyword, StorageServiceClass)
        return True


def handle_requested(event: Event) -> None:
    """Accept unknown (private or newer) SOP classes as storage, in this association only.

    pynetdicom's own switch for this (``UNRESTRICTED_STORAGE_SERVICE``) also lets
    through known non-storage services whose keyword differs between pydicom and
    pynetdicom, such as Modality Worklist FIND; so each unknown class is registered
    with pynetdicom's Storage service class (its `register_uid`) instead.
    """
    acceptor = event.assoc.acceptor
    request = cast(A_ASSOCIATE, event.assoc.requestor.primitive)
    extra = []
    for cx in request.presentation_context_definition_list:
        uid = cx.abstract_syntax
        # A malformed UID is left to negotiation, which refuses that context alone.
        if uid and UID(uid).is_valid and is_unknown_sop_class(uid) and register_storage_class(uid):
            extra.append(build_context(uid, [str(ts) for ts in cx.transfer_syntax]))
    if extra:
        acceptor.supported_contexts = acceptor.supported_contexts + extra


def handle_dimse_received(event: Event) -> None:
    """Let every C-STORE reach `handle_store`, whatever SOP class its command names.

    pynetdicom picks the service by the command's Affected SOP Class UID; one it has
    no service for aborts the whole association, and the rest of the sender's files
    with it. Registered as storage, the request gets a status from us instead.
    """
    message = event.message
    if isinstance(message, C_STORE_RQ) and message.command_set is not None:
        uid = str(message.command_set.get("AffectedSOPClassUID", ""))
        if uid and uid_to_service_class(uid) is ServiceClass:
            register_storage_class(uid)


def _peer(event: Event) -> tuple[str, str]:
    requestor = event.assoc.requestor
    return printable(requestor.ae_title), f"{requestor.address}:{requestor.port}"


@dataclass(frozen=True)
class StoreContext:
    """What the C-STORE handler needs besides the event, bound once per server."""

    landing: LandingZone
    counter: ReceiptCounter
    ids: AssociationIds
    ledger: MoveLedger | None = None
    """Our open C-MOVEs, to name the retrieval job a sub-operation belongs to."""
    min_free_bytes: int = 0
    """Space the landing filesystem keeps free; C-STOREs that would take it are refused."""
    syncer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(thread_name_prefix="dicomflow-fsync")
    )
    """Runs each received file's fsync while the handler checks its dataset."""


def _receipt(
    event: Event, ctx: StoreContext, status: int, nbytes: int, path: Path | None, ms: float
) -> str:
    """One JSON line per answered C-STORE: who sent what, and what we said.

    A C-STORE that is a sub-operation of a C-MOVE names the AE title and message id
    of that C-MOVE (its Move Originator); when the C-MOVE is one of ours, the
    retrieval job that asked for it is named too.
    """
    request = cast(C_STORE, event.request)
    calling_ae, peer = _peer(event)
    called_ae = cast(A_ASSOCIATE, event.assoc.requestor.primitive).called_ae_title
    originator = request.MoveOriginatorApplicationEntityTitle
    message_id = request.MoveOriginatorMessageID
    job_id = ctx.ledger.job_for(originator, message_id) if ctx.ledger else None
    return json.dumps(
        {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "association_id": ctx.ids.of(event.assoc),
            "calling_ae": calling_ae,
            "called_ae": called_ae,
            "peer": peer,
            "sop_class": str(request.AffectedSOPClassUID),
            "sop_instance": str(request.AffectedSOPInstanceUID),
            "transfer_syntax": str(event.context.transfer_syntax),
            "bytes": nbytes,
            "status": f"0x{status:04X}",
            "landing_path": str(path) if path else None,
            "move_originator_ae": printable(originator.strip()) if originator else None,
            "move_originator_message_id": message_id,
            "job_id": job_id,
            "ms": round(ms, 2),
            "process": os.getpid(),
        }
    )


def _uid(value: object) -> str:
    return str(value or "").strip("\x00 ")


def check_received(path: Path, request: C_STORE) -> int:
    """Success, or why a received dataset must not be stored (logged), as a status.

    As dcmtk's storescp does: the dataset must parse (up to its pixel data, which
    must fit in what arrived) and must name the SOP class and instance its command
    names. Values larger than `DEFER_SIZE` are not read.
    """
    try:
        ds, _ = read_file(path, stream=True, defer_size=DEFER_SIZE)
    except Unreadable as exc:
        LOGGER.error("C-STORE refused, cannot understand the dataset: %s", exc)
        return CANNOT_UNDERSTAND
    sop_class, sop_instance = _uid(ds.get("SOPClassUID")), _uid(ds.get("SOPInstanceUID"))
    if not sop_class or not sop_instance:
        LOGGER.error("C-STORE refused: the dataset has no SOP Class or SOP Instance UID")
        return CANNOT_UNDERSTAND
    if sop_class != _uid(request.AffectedSOPClassUID):
        LOGGER.error("C-STORE refused: the dataset's SOP class is not the command's")
        return DOES_NOT_MATCH_SOP_CLASS
    if sop_instance != _uid(request.AffectedSOPInstanceUID):
        LOGGER.error("C-STORE refused: the dataset's SOP instance is not the command's")
        return DOES_NOT_MATCH_SOP_CLASS
    return Status.SUCCESS


def _received_file(event: Event, ctx: StoreContext) -> PartialFile:
    """The landing zone's temporary file holding the request's dataset, as received."""
    partial = getattr(event.request, "_dataset_file", None)
    if isinstance(partial, PartialFile):
        return partial
    # Received into memory (chunked receiving switched off): write it out the same way.
    partial = ctx.landing.open_partial(ctx.min_free_bytes)
    partial.write(event.encoded_dataset())
    return partial


def handle_store(event: Event, ctx: StoreContext) -> int:
    """Check the dataset as received (with its file meta) and land it durably, then answer.

    The dataset arrived straight into a temporary file in the landing zone; Success
    is returned only after that file is checked, fsynced and renamed. A write that
    fails, or that leaves the filesystem less than ``receiver.min_free_bytes`` free,
    answers Out of Resources; a dataset that does not parse, or names another
    SOP class or instance than the command, an error status (`check_received`); so
    the sender keeps its copy and knows why. A refused dataset leaves no file.
    """
    started = time.perf_counter()
    nbytes = 0
    path: Path | None = None
    status: int = Status.SUCCESS
    request = cast(C_STORE, event.request)
    partial: PartialFile | None = None
    try:
        partial = _received_file(event, ctx)
        if request.AffectedSOPClassUID != event.context.abstract_syntax:
            status = SOP_CLASS_NOT_SUPPORTED
            LOGGER.error("C-STORE refused: its SOP class is not the one negotiated")
        elif partial.error is not None:
            raise partial.error
        else:
            # The fsync waits on the disk, the check on the CPU: run them side by side.
            synced = ctx.syncer.submit(partial.sync)
            status = check_received(partial.path, request)
            synced.result()  # raises the write's or the fsync's error
            if status == Status.SUCCESS:
                nbytes = partial.size
                path = ctx.landing.adopt(partial)
    except NoRoom as exc:
        status = OUT_OF_RESOURCES
        LOGGER.error("C-STORE refused: %s", exc)
    except OSError as exc:
        status = OUT_OF_RESOURCES
        LOGGER.error("C-STORE refused, landing write failed: %s", exc.strerror or exc)
    except Exception as exc:  # an escaped exception would become an unexplained 0xC211
        status = CANNOT_UNDERSTAND
        LOGGER.error("C-STORE refused: %s: %s", type(exc).__name__, exc)
    finally:
        if partial is not None and path is None:
            partial.discard()
    ctx.counter.add(status == Status.SUCCESS)
    sop_class = str(request.AffectedSOPClassUID)
    if status == Status.SUCCESS and sop_class not in STORAGE_SOP_CLASSES:
        LOGGER.warning("stored an instance of unknown SOP class %s", sop_class)
    ms = (time.perf_counter() - started) * 1000
    RECEIPTS.info(_receipt(event, ctx, status, nbytes, path, ms))
    return status


def handle_accepted(event: Event) -> None:
    """Log the association, and every presentation context we turned down, by name."""
    handle_association(event)
    refused = sorted({UID(str(cx.abstract_syntax)).name for cx in event.assoc.rejected_contexts})
    if refused:
        calling_ae, _ = _peer(event)
        LOGGER.warning("refused from %s: %s", calling_ae, "; ".join(refused))


def handle_connection_open(event: Event, ctx: StoreContext) -> None:
    """Give the new association our DUL and DIMSE providers, before its reader thread starts.

    The DUL keeps its state and timers: only its class changes, to ours (see
    `receiver.providers`), which waits for work instead of polling.
    """
    assoc = event.assoc
    ReceiverDUL.adopt(assoc.dul)
    assoc.dimse = ReceiverDIMSE(assoc, ctx.landing, ctx.min_free_bytes)


def handle_connection_closed(event: Event) -> None:
    """Drop what a closed connection left half received, and free its slot.

    A dataset cut off mid-transfer (or received but never answered) leaves its
    temporary file in the landing zone: it is deleted here. pynetdicom's acceptor
    waits for the A-ASSOCIATE-RQ until the ACSE timeout even after the connection
    is gone, so port checks and aborted connects would hold association slots for
    that long. An empty item wakes it as a timeout would.
    """
    assoc = event.assoc
    for partial in unfinished_files(assoc):
        partial.discard()
    never_associated = not (
        assoc.is_established or assoc.is_released or assoc.is_aborted or assoc.is_rejected
    )
    if assoc.is_acceptor and never_associated:
        assoc.dul.to_user_queue.put(None)


def handle_association(event: Event) -> None:
    """One log line per association event; accepted, rejected and aborted ones audited."""
    calling_ae, peer = _peer(event)
    what = event.event.name.removeprefix("EVT_").lower()
    called_ae = cast(A_ASSOCIATE, event.assoc.requestor.primitive).called_ae_title
    reason = None
    if what == "rejected":
        answer = cast(A_ASSOCIATE | None, event.assoc.acceptor.primitive)
        reason = answer.reason_str if answer is not None and answer.result else None
    log = LOGGER.warning if what == "rejected" else LOGGER.info
    log("association %s: %s (%s)%s", what, calling_ae, peer, f": {reason}" if reason else "")
    if what == "released":
        return
    audit(
        f"association-{what}",
        calling_ae=calling_ae,
        called_ae=printable(str(called_ae).strip()),
        peer=peer,
        reason=reason,
        tls=isinstance(getattr(event.assoc.dul.socket, "socket", None), ssl.SSLSocket) or None,
    )


@dataclass
class Receiver:
    """A running Storage SCP; `stop()` shuts it down and closes its sockets."""

    ae: AE
    server: NoDelayServer
    thread: threading.Thread
    counter: ReceiptCounter
    access: AccessPolicy

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, let established associations finish for a while, abort the rest.

        A connection that never completed association negotiation (a port probe, a
        stalled peer) has nothing to finish and is not waited for.
        """
        self.server.shutdown()  # closes the listening socket
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            running = [a for a in self.ae.active_associations if a.is_established]
            if not running:
                break
            time.sleep(0.05)
        for assoc in self.ae.active_associations:
            # Not yet associated: nothing to abort, and its daemon thread ends by the
            # ACSE timeout (pynetdicom waits that long for an A-ASSOCIATE-RQ).
            if assoc.is_established:
                LOGGER.warning("aborting association with %s at shutdown", assoc.requestor.ae_title)
                assoc.abort()
        self.thread.join(timeout=5)


class ReceiverError(Exception):
    """The receiver cannot start; the message says why in one line."""


def make_server(
    settings: ReceiverSettings,
    landing_dir: Path,
    ledger: MoveLedger | None = None,
    archive: Archive | None = None,
) -> Receiver:
    """Bind the SCP on `settings.host:port` (not yet serving); the caller runs it.

    `ledger` holds our own open C-MOVEs, so receipts can name the job behind each.
    With `archive` (and `settings.query_retrieve`), Q/R requests are answered from it.
    """
    configure_pynetdicom()
    landing = LandingZone(landing_dir)
    landing.root.mkdir(parents=True, exist_ok=True)
    stale = landing.remove_stale_partials()
    if stale:
        LOGGER.info("removed %d unacknowledged partial files from the landing zone", stale)
    try:
        policy = access_policy(settings)
        ssl_context = server_context(settings.tls) if settings.tls else None
    except (AccessError, TlsError) as exc:
        raise ReceiverError(str(exc)) from None
    serving = archive if settings.query_retrieve else None
    ae = build_ae(settings, serve_archive=serving is not None)
    counter = ReceiptCounter()
    store = StoreContext(landing, counter, AssociationIds(), ledger, settings.min_free_bytes)
    handlers: list[Any] = [
        (evt.EVT_REQUESTED, access.handle_requested, [policy]),
        (evt.EVT_CONN_OPEN, handle_connection_open, [store]),
        (evt.EVT_C_STORE, handle_store, [store]),
        (evt.EVT_ACCEPTED, handle_accepted),
        (evt.EVT_RELEASED, handle_association),
        (evt.EVT_ABORTED, handle_association),
        (evt.EVT_REJECTED, handle_association),
        (evt.EVT_CONN_CLOSE, handle_connection_closed),
        (evt.EVT_DIMSE_RECV, handle_dimse_received),
    ]
    if settings.accept_unknown_sop_classes:
        handlers.append((evt.EVT_REQUESTED, handle_requested))
    if serving is not None:
        handlers += [
            (evt.EVT_C_FIND, qr_scp.handle_find, [serving]),
            (evt.EVT_C_MOVE, qr_scp.handle_move, [serving, settings.ae_title]),
            (evt.EVT_C_GET, qr_scp.handle_get, [serving]),
        ]
    address = (settings.host, settings.port)
    try:
        server = cast(
            NoDelayServer,
            ae.make_server(
                address,
                evt_handlers=handlers,
                server_class=SharedPortServer if settings.processes > 1 else NoDelayServer,
                ssl_context=ssl_context,
            ),
        )
    except OSError as exc:
        raise ReceiverError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    server.contexts = QuickCopyContexts(server.contexts)
    # Registered like AE.start_server() does, so the server's shutdown() finds it.
    ae._servers.append(server)
    thread = threading.Thread(target=server.serve_forever, name="dicomflow-scp", daemon=True)
    return Receiver(ae=ae, server=server, thread=thread, counter=counter, access=policy)


def start_receiver(
    settings: ReceiverSettings,
    landing_dir: Path,
    ledger: MoveLedger | None = None,
    archive: Archive | None = None,
) -> Receiver:
    """Start the SCP in a background thread and return it once it is listening."""
    receiver = make_server(settings, landing_dir, ledger, archive)
    receiver.thread.start()
    LOGGER.info(
        "listening as %s on %s:%d%s, landing zone %s",
        settings.ae_title,
        settings.host,
        receiver.port,
        " (DICOM TLS)" if settings.tls else "",
        landing_dir,
    )
    LOGGER.info("access: %s", receiver.access.summary)
    audit(
        "receiver-started",
        ae_title=settings.ae_title,
        address=f"{settings.host}:{receiver.port}",
        tls=bool(settings.tls),
        access=receiver.access.summary,
    )
    return receiver
