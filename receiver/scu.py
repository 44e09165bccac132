"""Associations we start: to a named remote node, C-ECHO first, failures explained.

As our conformance target does, a C-ECHO goes ahead of every query or retrieve
association (`ScuSettings.echo_first`): a node that does not answer it gets no
further attempt, and the caller gets one line saying why (refused, timed out,
rejected with the node's reason).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category

from receiver import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from receiver.settings import RemoteNode, ScuSettings
from receiver.tls import TlsError, client_context

VERIFICATION = UID("1.2.840.10008.1.1")
"""Verification SOP Class (PS3.4 Annex A)."""


class ScuError(Exception):
    """A remote node could not be used; the message says why in one line."""


class NodeUnreachable(ScuError):
    """No TCP connection: refused, timed out, or the host is unknown."""


class AssociationRejected(ScuError):
    """The node answered A-ASSOCIATE-RJ (wrong AE title, no such service, busy...)."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient
        """Whether asking again later may succeed (PS3.8 9.3.4: result 2, rejected-transient)."""


class AssociationLost(ScuError):
    """The association was aborted, or the node stopped answering, mid-operation."""


class EchoFailed(ScuError):
    """The node associated but answered the C-ECHO with a failure, or not at all."""


@dataclass(frozen=True)
class Peer:
    """One remote node as our SCU sees it: where it is, and who we say we are."""

    name: str
    node: RemoteNode
    calling_ae: str
    scu: ScuSettings

    def describe(self) -> str:
        address = f"{self.node.ae_title}@{self.node.host}:{self.node.port}"
        return address if self.name == address else f"{self.name} ({address})"


def build_scu_ae(
    peer: Peer,
    abstract_syntaxes: Sequence[str],
    contexts: Sequence[PresentationContext] | None = None,
) -> AE:
    """An AE proposing `contexts`, else `abstract_syntaxes` with default transfer syntaxes."""
    ae = AE(ae_title=peer.calling_ae)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.maximum_pdu_size = peer.scu.max_pdu
    ae.connection_timeout = peer.scu.connection_timeout
    ae.acse_timeout = peer.scu.acse_timeout
    ae.dimse_timeout = peer.scu.dimse_timeout
    ae.network_timeout = peer.scu.network_timeout
    if contexts is not None:
        ae.requested_contexts = list(contexts)
        return ae
    for uid in abstract_syntaxes:
        ae.add_requested_context(uid)
    return ae


def tls_context(peer: Peer) -> ssl.SSLContext | None:
    """The TLS context for `peer`, or None for plain TCP; ScuError if files are unusable."""
    if peer.node.tls is None:
        return None
    try:
        return client_context(peer.node.tls)
    except TlsError as exc:
        raise ScuError(f"{peer.describe()}: {exc}") from None


def _why_unconnected(peer: Peer, context: ssl.SSLContext | None) -> str:
    """After pynetdicom failed to connect: try once more ourselves to name the cause."""
    node = peer.node
    try:
        with socket.create_connection((node.host, node.port), peer.scu.connection_timeout) as sock:
            if context is not None:
                with context.wrap_socket(sock, server_hostname=node.host):
                    pass
            return "the connection closed before association"
    except ssl.SSLError as exc:
        return f"TLS handshake failed ({exc.reason or exc})"
    except socket.gaierror:
        return f"unknown host {node.host!r}"
    except TimeoutError:
        return f"no answer within {peer.scu.connection_timeout:g} s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()


def _rejection(assoc: Association, peer: Peer) -> AssociationRejected:
    primitive = cast(A_ASSOCIATE, assoc.acceptor.primitive)
    transient = primitive is not None and primitive.result == 0x02
    if primitive is None:
        return AssociationRejected(f"{peer.describe()} rejected the association", transient)
    return AssociationRejected(
        f"{peer.describe()} rejected the association ({primitive.result_str.lower()}, "
        f"{primitive.source_str}): {primitive.reason_str}",
        transient,
    )


@contextmanager
def _associated(
    peer: Peer,
    abstract_syntaxes: Sequence[str],
    contexts: Sequence[PresentationContext] | None = None,
) -> Iterator[Association]:
    ae = build_scu_ae(peer, abstract_syntaxes, contexts)
    opened: list[bool] = []
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, lambda _: opened.append(True))]
    node = peer.node
    context = tls_context(peer)
    try:
        assoc = ae.associate(
            node.host,
            node.port,
            ae_title=node.ae_title,
            evt_handlers=handlers,
            tls_args=(context, node.host) if context else None,
        )
    except socket.gaierror:
        raise NodeUnreachable(
            f"cannot connect to {peer.describe()}: unknown host {node.host!r}"
        ) from None
    if assoc.is_rejected:
        raise _rejection(assoc, peer)
    if not assoc.is_established:
        if not opened:
            why = _why_unconnected(peer, context)
            raise NodeUnreachable(f"cannot connect to {peer.describe()}: {why}")
        raise AssociationLost(
            f"{peer.describe()} did not complete association within "
            f"{peer.scu.acse_timeout:g} s, or aborted it"
        )
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def echo(peer: Peer) -> float:
    """C-ECHO `peer` on an association of its own; the round trip in milliseconds.

    Raises a `ScuError` that says what failed.
    """
    started = time.perf_counter()
    with _associated(peer, [VERIFICATION]) as assoc:
        status = assoc.send_c_echo()
        if "Status" not in status:
            raise EchoFailed(f"{peer.describe()} did not answer the C-ECHO")
        code = int(status.Status)
        if code_to_category(code) != "Success":
            raise EchoFailed(f"{peer.describe()} answered the C-ECHO with 0x{code:04X}")
    return (time.perf_counter() - started) * 1000


@contextmanager
def associate(
    peer: Peer,
    abstract_syntaxes: Sequence[str],
    contexts: Sequence[PresentationContext] | None = None,
) -> Iterator[Association]:
    """An association to `peer` for `abstract_syntaxes`, released after; C-ECHO first.

    `contexts` gives the presentation contexts to propose when the default transfer
    syntaxes for each abstract syntax are not what is wanted (sending files as stored).

    Raises a `ScuError` when the echo or the association fails, or when the node
    accepts none of the presentation contexts asked for.
    """
    if peer.scu.echo_first:
        echo(peer)
    with _associated(peer, abstract_syntaxes, contexts) as assoc:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        missing = [uid for uid in abstract_syntaxes if uid not in accepted]
        if len(missing) == len(abstract_syntaxes):
            names = ", ".join(UID(uid).name for uid in missing)
            raise ScuError(f"{peer.describe()} does not offer {names}")
        yield assoc


def peer_for(name: str, nodes: dict[str, RemoteNode], calling_ae: str, scu: ScuSettings) -> Peer:
    """The configured node `name`, or an ad-hoc ``AETITLE@host:port``."""
    if name in nodes:
        return Peer(name, nodes[name], calling_ae, scu)
    if "@" in name and ":" in name.rpartition("@")[2]:
        ae_title, _, address = name.rpartition("@")
        host, _, port = address.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")  # [::1]:104
        try:
            node = RemoteNode(ae_title=ae_title, host=host, port=int(port))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"])
            raise ScuError(f"{name}: not a node: {field}: {error['msg']}") from None
        except ValueError:
            raise ScuError(f"{name}: not a node: port {port!r} is not a number") from None
        return Peer(name, node, calling_ae, scu)
    known = ", ".join(sorted(nodes)) or "none configured"
    raise ScuError(
        f"unknown node {name!r} (known: {known}; or give AETITLE@host:port); "
        "nodes are [nodes.NAME] tables in the config file"
    )
