"""DICOM network side of dicomflow: the Storage SCP that fills the landing zone.

The landing zone is the hand-over point to the autoloader: a file there with its
final name is complete and durable, and the sender has been told Success for it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dicomflow")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.77101001"
"""Our Implementation Class UID (PS3.7 D.3.3.2), under pydicom's UID root."""

IMPLEMENTATION_VERSION_NAME = f"DICOMFLOW_{__version__}"[:16]
"""Implementation Version Name: at most 16 characters (PS3.7 D.3.3.2.2)."""
