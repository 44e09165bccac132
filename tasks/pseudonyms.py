"""Keyed, deterministic replacements: the same original gives the same result in every run.

HMAC-SHA256 with the site's secret salt means nobody without the salt can test a
guessed patient ID or UID against our output: a plain or publicly salted hash of a
UID can be recomputed by anyone who holds the original.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass

from pydicom.uid import UID

STANDARD_UID_ROOT = "1.2.840.10008."
"""UIDs defined by the DICOM standard itself (SOP classes, transfer syntaxes, ...)."""

MAX_DATE_SHIFT_DAYS = 3650
"""Dates move back by 1 to this many days, one offset per patient."""

PSEUDONYM_PREFIX = "ANON-"
"""Every patient pseudonym starts so; data anonymized by us before carries it too."""


@dataclass(frozen=True)
class Pseudonymizer:
    """Derives pseudonyms, UIDs and date offsets from originals with one secret key."""

    salt: bytes

    def _digest(self, kind: str, value: str) -> bytes:
        # surrogateescape: a file name that is not UTF-8 still hashes (to its own bytes)
        data = f"{kind}\x00{value}".encode("utf-8", "surrogateescape")
        return hmac.new(self.salt, data, hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """A new UID under the 2.25 (UUID) arc, from the original UID (PS3.5 B.2)."""
        digest = self._digest("uid", original.strip("\x00 "))
        return f"2.25.{uuid.UUID(bytes=digest[:16], version=5).int}"

    def patient_id(self, original: str) -> str:
        """A patient pseudonym such as ``ANON-7Q2K4M9XB3D5F6H1``, safe as a folder name."""
        digest = self._digest("patient", original.strip())
        return PSEUDONYM_PREFIX + base64.b32encode(digest[:10]).decode().rstrip("=")

    def text(self, original: str, length: int) -> str:
        """A keyed stand-in for a text value, at most `length` characters (for ``hash``)."""
        digest = self._digest("text", original.strip())
        return base64.b32encode(digest).decode().rstrip("=")[: max(1, min(length, 52))]

    def landed_name(self, original: str) -> str:
        """A keyed stand-in for a file name someone else chose, such as
        ``hashed-7Q2K4M9XB3D5F6H1A2C3E4G5J6``: the same name always gives the same one."""
        digest = self._digest("landed-name", original)
        return "hashed-" + base64.b32encode(digest).decode().rstrip("=")[:26]

    def date_shift_days(self, patient: str) -> int:
        """How many days this patient's dates move (negative: into the past)."""
        digest = self._digest("date-shift", patient)
        return -(int.from_bytes(digest[:4], "big") % MAX_DATE_SHIFT_DAYS + 1)


def is_registered_uid(value: str) -> bool:
    """True for UIDs the standard registers (SOP classes, transfer syntaxes, codes ...)."""
    return bool(UID(value.strip("\x00 ")).keyword)


def is_standard_uid(value: str) -> bool:
    """True for registered UIDs and anything else under the standard's own root."""
    text = value.strip("\x00 ")
    return text.startswith(STANDARD_UID_ROOT) or is_registered_uid(text)
