"""Settings of the DICOM receiver (the Storage SCP)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator
from pynetdicom._validators import validate_ae

DAY = 86400.0
"""The longest timeout that makes sense; larger values overflow the timers."""


class ReceiverSettings(BaseModel):
    """How the Storage SCP listens and negotiates."""

    model_config = {"extra": "forbid"}

    ae_title: str = Field("DICOMFLOW", description="Our AE title (1-16 characters).")
    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 to listen on all.")
    port: int = Field(11112, ge=0, le=65535, description="TCP port to listen on (0 = any free).")
    max_pdu: int = Field(
        65536,
        ge=0,
        le=2**32 - 1,
        description="Maximum PDU size we receive, in bytes (0 = unlimited).",
    )
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
    acse_timeout: float = Field(
        30.0, gt=0, le=DAY, allow_inf_nan=False, description="Seconds to wait for ACSE messages."
    )
    dimse_timeout: float = Field(
        60.0, gt=0, le=DAY, allow_inf_nan=False, description="Seconds to wait for DIMSE messages."
    )
    network_timeout: float = Field(
        60.0,
        gt=0,
        le=DAY,
        allow_inf_nan=False,
        description="Seconds of network silence before the association is aborted.",
    )

    @field_validator("ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str) -> str:
        ok, why = validate_ae(value)
        if not ok or not value.strip():
            raise ValueError(f"invalid AE title {value!r}: {why or 'empty'}")
        return value.strip()
