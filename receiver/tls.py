"""DICOM TLS contexts (PS3.15 B.1/B.9, the BCP 195 secure transport profiles).

The standard library's ssl module does the work; here we only turn settings into
`ssl.SSLContext`s with TLS 1.2 as the floor, and file problems into one-line errors.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from receiver.settings import NodeTls, TlsSettings


class TlsError(Exception):
    """A certificate, key or CA file cannot be used; the message says which and why."""


def _load(what: str, path: Path, load: Callable[[], object]) -> None:
    try:
        load()
    except FileNotFoundError:
        raise TlsError(f"TLS {what} {path}: no such file") from None
    except PermissionError:
        raise TlsError(f"TLS {what} {path}: permission denied") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise TlsError(f"TLS {what} {path}: cannot be loaded ({reason})") from None


def _base(purpose: ssl.Purpose) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The receiver's context: our certificate, and client certificates checked if asked."""
    context = _base(ssl.Purpose.CLIENT_AUTH)
    cert, key = settings.cert_file, settings.key_file
    _load("certificate or key", cert, lambda: context.load_cert_chain(cert, key))
    if settings.ca_file is not None:
        ca = settings.ca_file
        _load("CA file", ca, lambda: context.load_verify_locations(cafile=ca))
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL
        )
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(settings: NodeTls) -> ssl.SSLContext:
    """Our SCU's context towards one node: the node's certificate is always checked."""
    context = _base(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = settings.check_hostname
    if settings.ca_file is not None:
        ca = settings.ca_file
        _load("CA file", ca, lambda: context.load_verify_locations(cafile=ca))
    if settings.cert_file is not None and settings.key_file is not None:
        cert, key = settings.cert_file, settings.key_file
        _load("certificate or key", cert, lambda: context.load_cert_chain(cert, key))
    return context
