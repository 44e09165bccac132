"""Settings of the DICOM receiver (the Storage SCP)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator
from pynetdicom._validators import validate_ae

DAY = 86400.0
"""The longest timeout that makes sense; larger values overflow the timers."""


def seconds(default: float, description: str) -> Any:
    """A timeout field: positive, finite, at most a day."""
    return Field(default, gt=0, le=DAY, allow_inf_nan=False, description=description)


def max_pdu(description: str) -> Any:
    """A maximum PDU size field (PS3.8 D.1: 0 means no limit)."""
    return Field(65536, ge=0, le=2**32 - 1, description=description)


class ReceiverSettings(BaseModel):
    """How the Storage SCP listens and negotiates."""

    model_config = {"extra": "forbid"}

    ae_title: str = Field("DICOMFLOW", description="Our AE title (1-16 characters).")
    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 to listen on all.")
    port: int = Field(11112, ge=0, le=65535, description="TCP port to listen on (0 = any free).")
    max_pdu: int = max_pdu("Maximum PDU size we receive, in bytes (0 = unlimited).")
    max_associations: int = Field(
        10, ge=1, le=1000, description="Associations served at the same time."
    )
    require_called_ae_title: bool = Field(
        True,
        description="Reject associations addressed to another AE title than ours.",
    )
    accept_unknown_sop_classes: bool = Field(
        True,
        description="Store SOP classes pynetdicom does not know (private or newer ones).",
    )
    acse_timeout: float = seconds(30.0, "Seconds to wait for ACSE messages.")
    dimse_timeout: float = seconds(60.0, "Seconds to wait for DIMSE messages.")
    network_timeout: float = seconds(
        60.0, "Seconds of network silence before the association is aborted."
    )

    @field_validator("ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str) -> str:
        ok, why = validate_ae(value)
        if not ok or not value.strip():
            raise ValueError(f"invalid AE title {value!r}: {why or 'empty'}")
        return value.strip()


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

    ae_title: str = Field(description="The node's AE title.")
    host: str = Field(description="Host name or address.")
    port: int = Field(ge=1, le=65535, description="TCP port of its DICOM service.")
    max_associations: int = Field(
        2,
        ge=1,
        le=64,
        description="Associations we open to this node at the same time, at most.",
    )

    @field_validator("ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str) -> str:
        return ReceiverSettings._valid_ae_title(value)

    @field_validator("host")
    @classmethod
    def _host_given(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value.strip()):
            raise ValueError(f"invalid host {value!r}")
        return value.strip()
