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


class _EncryptedKey(Exception):
    """OpenSSL asked for a passphrase: the key file is encrypted."""


def _no_passphrase() -> str:
    """Never prompt on a terminal for a key's passphrase (a service has no one to ask)."""
    raise _EncryptedKey


def _readable(path: Path, what: str) -> None:
    if not str(path) or str(path) == ".":
        raise TlsError(f"TLS {what}: no file given")
    if path.is_dir():
        raise TlsError(f"TLS {what} {path}: is a folder, not a file")
    if path.exists() and not path.is_file():
        raise TlsError(f"TLS {what} {path}: not a regular file")


def _load(what: str, path: Path, load: Callable[[], object]) -> None:
    try:
        load()
    except _EncryptedKey:
        raise TlsError(
            f"TLS {what} {path}: the private key is encrypted; give an unencrypted key file"
        ) from None
    except FileNotFoundError:
        raise TlsError(f"TLS {what} {path}: no such file") from None
    except PermissionError:
        raise TlsError(f"TLS {what} {path}: permission denied") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        if "PEM lib" in str(reason) or "PEM lib" in str(exc):
            reason = "not a PEM private key, or not the key of that certificate"
        raise TlsError(f"TLS {what} {path}: cannot be loaded ({reason})") from None


def _load_identity(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Our certificate and key, each checked on its own first so errors name the right one."""
    _readable(cert, "certificate")
    _readable(key, "private key")
    _load("certificate", cert, lambda: ssl.PEM_cert_to_DER_cert(cert.read_text()))
    _load(
        "certificate or private key",
        key,
        lambda: context.load_cert_chain(cert, key, password=_no_passphrase),
    )


def _base(purpose: ssl.Purpose) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The receiver's context: our certificate, and client certificates checked if asked."""
    context = _base(ssl.Purpose.CLIENT_AUTH)
    _load_identity(context, settings.cert_file, settings.key_file)
    if settings.ca_file is not None:
        ca = settings.ca_file
        _readable(ca, "CA file")
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
        _readable(ca, "CA file")
        _load("CA file", ca, lambda: context.load_verify_locations(cafile=ca))
    if settings.cert_file is not None and settings.key_file is not None:
        _load_identity(context, settings.cert_file, settings.key_file)
    return context
