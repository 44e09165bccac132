"""Pixel data that may show identifying text: what the header says and what to suspect.

Our anonymizer changes headers, not pixels. An instance that declares burned-in
annotation goes to quarantine by default; kinds of images that often carry text in
their pixels without saying so are flagged in the catalog for review.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

SUSPECT_MODALITIES = frozenset({"US", "IVUS", "XA", "RF", "ES", "XC", "GM", "SM", "OT", "DOC"})
"""Modalities whose images are often screen or video captures with text on them."""

SECONDARY_CAPTURE_ROOT = "1.2.840.10008.5.1.4.1.1.7"
"""Secondary Capture Image Storage and its multi-frame variants."""


def declared(ds: Dataset) -> str:
    """The Burned In Annotation value: YES when any value of it reads YES once spaces
    and NUL padding are trimmed, whatever its case or encoding (a device that writes
    'yes' means it); else the values as sent, upper case (NO), or empty when absent."""
    value = ds.get("BurnedInAnnotation")
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1").split("\\")
    values = value if isinstance(value, MultiValue | list | tuple) else [value]
    words = [str(v).strip(" \x00").upper() for v in values if v is not None]
    if "YES" in words:
        return "YES"
    return "\\".join(w for w in words if w)


def suspect(ds: Dataset) -> bool:
    """True when the pixels may hold text: declared YES, or a likely kind that does not say NO."""
    value = declared(ds)
    if value == "YES":
        return True
    if value == "NO":
        return False
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    return modality in SUSPECT_MODALITIES or sop_class.startswith(SECONDARY_CAPTURE_ROOT)
