"""Who may associate with the receiver: a calling AE title allowlist, per host or network.

Secure by default: bound to loopback, any local caller may connect; bound to any
other address, only listed callers get in unless the config opens the receiver to
anyone explicitly (`ReceiverSettings.allow_any_caller`). Callers that are not let in
get A-ASSOCIATE-RJ, rejected-permanent, "calling AE title not recognized" (PS3.8
9.3.4), which is all the standard lets an acceptor say about its reasons.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import cast

from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE

from receiver.audit import audit
from receiver.settings import AllowedCaller, ReceiverSettings

LOGGER = logging.getLogger("dicomflow.receiver")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REJECTED_PERMANENT = 0x01
SERVICE_USER = 0x01
CALLING_AE_NOT_RECOGNIZED = 0x03


class AccessError(Exception):
    """The access settings cannot be applied; the message says why in one line."""


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the port to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address(text: str) -> IpAddress | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _networks(caller: AllowedCaller) -> tuple[IpNetwork, ...] | None:
    """The networks `caller` may call from (None: anywhere); host names resolved now."""
    if caller.host is None:
        return None
    try:
        return (ipaddress.ip_network(caller.host, strict=False),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(caller.host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise AccessError(
            f"allowed caller {caller.ae_title}@{caller.host}: cannot resolve host ({exc.strerror})"
        ) from None
    found = {_address(str(info[4][0])) for info in infos}
    return tuple(ipaddress.ip_network(a) for a in found if a is not None)


@dataclass(frozen=True)
class AccessPolicy:
    """The callers let in: None means anyone, else AE title -> networks (None: any host)."""

    callers: dict[str, list[tuple[IpNetwork, ...] | None]] | None
    summary: str

    def refusal(self, ae_title: str, address: str) -> str | None:
        """Why a caller is not let in, or None when it is."""
        if self.callers is None:
            return None
        allowed = self.callers.get(ae_title.strip())
        if allowed is None:
            return "calling AE title not in allowed_callers"
        peer = _address(address)
        for networks in allowed:
            if networks is None or (peer is not None and any(peer in n for n in networks)):
                return None
        return f"{ae_title.strip()} is not allowed from {address}"


def access_policy(settings: ReceiverSettings) -> AccessPolicy:
    """The policy `settings` ask for; raises AccessError for a receiver nobody could use."""
    if settings.allowed_callers:
        callers: dict[str, list[tuple[IpNetwork, ...] | None]] = {}
        for caller in settings.allowed_callers:
            callers.setdefault(caller.ae_title, []).append(_networks(caller))
        return AccessPolicy(callers, f"only {len(callers)} listed calling AE title(s) may connect")
    if settings.allow_any_caller:
        return AccessPolicy(None, f"any caller may connect to {settings.host} (allow_any_caller)")
    if is_loopback(settings.host):
        return AccessPolicy(None, "any local caller may connect (bound to loopback)")
    raise AccessError(
        f"receiver bound to {settings.host} with no allowed callers: list them in "
        "receiver.allowed_callers, or set receiver.allow_any_caller = true"
    )


def handle_requested(event: Event, policy: AccessPolicy) -> None:
    """Reject an A-ASSOCIATE-RQ from a caller the policy does not let in.

    Bound to EVT_REQUESTED, which pynetdicom fires before it negotiates; a reject
    sent here ends the association before any presentation context is accepted.
    """
    assoc = event.assoc
    request = cast(A_ASSOCIATE, assoc.requestor.primitive)
    calling = str(request.calling_ae_title)
    why = policy.refusal(calling, str(assoc.requestor.address))
    if why is None:
        return
    assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED)
    LOGGER.warning("association rejected: %s", why)
    audit(
        "association-rejected",
        calling_ae=calling.strip(),
        called_ae=str(request.called_ae_title).strip(),
        peer=f"{assoc.requestor.address}:{assoc.requestor.port}",
        reason=why,
    )
    assoc.kill()
