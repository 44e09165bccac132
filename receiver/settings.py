"""Settings of the DICOM receiver (the Storage SCP)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator
from pynetdicom._validators import validate_ae

DAY = 86400.0
"""The longest timeout that makes sense; larger values overflow the timers."""


def seconds(default: float, description: str) -> Any:
    """A timeout field: positive, finite, at most a day."""
    return Field(default, gt=0, le=DAY, allow_inf_nan=False, description=description)


def max_pdu(description: str) -> Any:
    """A maximum PDU size field (PS3.8 D.1: 0 means no limit)."""
    return Field(65536, ge=0, le=2**32 - 1, description=description)


def _valid_ae(value: str) -> str:
    ok, why = validate_ae(value)
    if not ok or not value.strip():
        raise ValueError(f"invalid AE title {value!r}: {why or 'empty'}")
    return value.strip()


AeTitle = Annotated[str, AfterValidator(_valid_ae)]
"""An AE title: 1-16 printable characters, no backslash, not all spaces (PS3.5 6.2)."""


class AllowedCaller(BaseModel):
    """A calling AE title allowed to associate, optionally only from a host or network.

    Written as a table (``{ae_title = "CT1", host = "10.1.2.0/24"}``) or as a string,
    ``"CT1"`` or ``"CT1@10.1.2.3"``.
    """

    model_config = {"extra": "forbid"}

    ae_title: AeTitle = Field(description="The caller's AE title.")
    host: str | None = Field(
        None, description="Address, network (CIDR) or host name it must call from; any if unset."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        if isinstance(value, str):
            ae_title, at, host = value.partition("@")
            return {"ae_title": ae_title, "host": host if at else None}  # "CT1@" is an error
        return value

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or any(c.isspace() or c in "/@" for c in value.split("/", 1)[0]):
            raise ValueError(f"invalid host {value!r}")
        if "/" in value:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ValueError(f"invalid network {value!r}: {exc}") from None
        return value


class TlsSettings(BaseModel):
    """DICOM TLS (PS3.15 Annex B, the secure transport connection profiles) for the receiver."""

    model_config = {"extra": "forbid"}

    cert_file: Path = Field(description="Our certificate (PEM), with its chain.")
    key_file: Path = Field(description="Our private key (PEM, unencrypted).")
    ca_file: Path | None = Field(
        None, description="CA certificates (PEM) that client certificates are checked against."
    )
    require_client_cert: bool = Field(
        False, description="Refuse callers that present no certificate signed by `ca_file`."
    )

    @model_validator(mode="after")
    def _ca_for_clients(self) -> TlsSettings:
        if self.require_client_cert and self.ca_file is None:
            raise ValueError("require_client_cert needs ca_file to check client certificates")
        return self


class NodeTls(BaseModel):
    """DICOM TLS towards a remote node: whom we trust, and our own certificate if it asks."""

    model_config = {"extra": "forbid"}

    ca_file: Path | None = Field(
        None, description="CA certificates (PEM) the node's certificate must chain to."
    )
    cert_file: Path | None = Field(None, description="Our client certificate (PEM).")
    key_file: Path | None = Field(None, description="Our client private key (PEM).")
    check_hostname: bool = Field(
        True, description="The node's certificate must name its host (or address)."
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> NodeTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class ReceiverSettings(BaseModel):
    """How the Storage SCP listens and negotiates."""

    model_config = {"extra": "forbid"}

    ae_title: AeTitle = Field("DICOMFLOW", description="Our AE title (1-16 characters).")
    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 to listen on all.")
    port: int = Field(11112, ge=0, le=65535, description="TCP port to listen on (0 = any free).")
    max_pdu: int = max_pdu("Maximum PDU size we receive, in bytes (0 = unlimited).")
    max_associations: int = Field(
        10, ge=1, le=1000, description="Associations served at the same time, per process."
    )
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Receiver processes sharing the port (SO_REUSEPORT); more than one lets "
            "parallel associations use more than one core."
        ),
    )
    require_called_ae_title: bool = Field(
        True,
        description="Reject associations addressed to another AE title than ours.",
    )
    accept_unknown_sop_classes: bool = Field(
        True,
        description="Store SOP classes pynetdicom does not know (private or newer ones).",
    )
    allowed_callers: list[AllowedCaller] = Field(
        default_factory=list,
        description=(
            'Calling AE titles allowed in, as "AE", "AE@host" or "AE@network/bits"; '
            "others are rejected (calling AE title not recognized). Empty: any caller "
            "when bound to loopback, none otherwise unless allow_any_caller."
        ),
    )
    allow_any_caller: bool = Field(
        False,
        description="Let any caller in even when bound to a non-loopback address.",
    )
    tls: TlsSettings | None = Field(None, description="Serve DICOM TLS instead of plain TCP.")
    query_retrieve: bool = Field(
        True,
        description=(
            "Serve Patient and Study Root C-FIND, C-MOVE and C-GET over the catalog to the "
            "callers let in (anonymized data only); C-MOVE sends to configured nodes."
        ),
    )
    min_free_bytes: int = Field(
        128 * 2**20,
        ge=0,
        description=(
            "Free space the landing zone's filesystem must keep; a C-STORE that would go "
            "below it is refused with Out of Resources (0xA700)."
        ),
    )
    acse_timeout: float = seconds(30.0, "Seconds to wait for ACSE messages.")
    dimse_timeout: float = seconds(60.0, "Seconds to wait for DIMSE messages.")
    network_timeout: float = seconds(
        60.0, "Seconds of network silence before the association is aborted (idle timeout)."
    )

    @model_validator(mode="after")
    def _list_or_open(self) -> ReceiverSettings:
        if self.allowed_callers and self.allow_any_caller:
            raise ValueError("allowed_callers and allow_any_caller = true contradict each other")
        return self


class ScuSettings(BaseModel):
    """How we act as an SCU (C-ECHO, C-FIND, C-MOVE) towards remote nodes."""

    model_config = {"extra": "forbid"}

    max_pdu: int = max_pdu("Maximum PDU size we propose to receive, in bytes (0 = unlimited).")
    echo_first: bool = Field(
        True,
        description="C-ECHO a node before each query or retrieve association; no echo, no attempt.",
    )
    connection_timeout: float = seconds(10.0, "Seconds to wait for TCP connect.")
    acse_timeout: float = seconds(30.0, "Seconds to wait for ACSE messages.")
    dimse_timeout: float = seconds(
        300.0, "Seconds to wait for each DIMSE response (a C-MOVE's next pending one)."
    )
    network_timeout: float = seconds(
        300.0, "Seconds of network silence before an association is aborted."
    )


class RemoteNode(BaseModel):
    """A remote DICOM node (a PACS or archive) we query and retrieve from."""

    model_config = {"extra": "forbid"}

    ae_title: AeTitle = Field(description="The node's AE title.")
    host: str = Field(description="Host name or address.")
    port: int = Field(ge=1, le=65535, description="TCP port of its DICOM service.")
    max_associations: int = Field(
        2,
        ge=1,
        le=64,
        description="Associations we open to this node at the same time, at most.",
    )
    tls: NodeTls | None = Field(None, description="Talk DICOM TLS to this node.")

    @field_validator("host")
    @classmethod
    def _host_given(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value.strip()):
            raise ValueError(f"invalid host {value!r}")
        return value.strip()
