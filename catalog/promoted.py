"""Header attributes researchers filter on, promoted from ``dicom_json`` to typed columns.

Parsing a 1.5 KB JSON header per row costs about a second per million instances;
a typed column costs a few milliseconds. The keywords are listed here, once; the
column name, Arrow type and meaning come from pydicom's data dictionary (PS3.6),
so adding one is one word. `json_sql` gives the same value from ``dicom_json``:
compaction uses it to fill the columns of parts written before a keyword was
promoted, and the tests check it against what ingest extracted.
"""

from __future__ import annotations

import re

import pyarrow as pa
from pydicom.datadict import dictionary_description, dictionary_VM, dictionary_VR, tag_for_keyword

INSTANCE_KEYWORDS: tuple[str, ...] = (
    # equipment and series: the same for every instance of a series, but counted per instance
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "BodyPartExamined",
    "PatientPosition",
    # image
    "ImageType",
    "PhotometricInterpretation",
    "BitsStored",
    "PixelSpacing",
    "SpacingBetweenSlices",
    "ImageLaterality",
    "ViewPosition",
    # CT and X-ray
    "KVP",
    "XRayTubeCurrent",
    "ExposureTime",
    "ConvolutionKernel",
    # MR
    "MagneticFieldStrength",
    "SequenceName",
    "ScanningSequence",
    "MRAcquisitionType",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
)
"""Promoted to columns of `instances`, after its hand-written ones (which include Rows,
Columns, NumberOfFrames and SliceThickness)."""

_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})


def column_name(keyword: str) -> str:
    """A DICOM keyword as a column name: ``XRayTubeCurrent`` -> ``x_ray_tube_current``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", keyword).lower()


def arrow_type(keyword: str) -> pa.DataType:
    """The column type a keyword's VR and VM call for.

    Numbers are doubles or integers; a number with several values (Pixel Spacing) is a
    list. Text with several values stays one string, joined by backslashes as DICOM
    writes it, like the catalog's other text columns.
    """
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword} is not a DICOM keyword")
    vr, vm = dictionary_VR(tag), dictionary_VM(tag)
    if vr in _FLOAT_VRS or vr in _INT_VRS:
        scalar = pa.float64() if vr in _FLOAT_VRS else pa.int64()
        return scalar if vm == "1" else pa.list_(scalar)
    if vr == "DA":
        return pa.date32()
    return pa.string()


def description(keyword: str) -> str:
    """The attribute's name in PS3.6, with its tag."""
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return f"{dictionary_description(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})."


def json_tag(keyword: str) -> str:
    """The key DICOM JSON uses for a keyword: its tag as 8 hex digits."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword} is not a DICOM keyword")
    return f"{tag:08X}"


def json_sql(keyword: str, kind: pa.DataType, header: str = "dicom_json") -> str:
    """A DuckDB expression giving the column's value from the DICOM JSON in `header`.

    It converts as ingest does (tasks/extract.py): the first value for a number or a
    date, all values backslash-joined for text, None where nothing fits.
    """
    path = f'$."{json_tag(keyword)}".Value'
    first = f"json_extract_string({header}, '{path}[0]')"
    if pa.types.is_list(kind):
        inner = "DOUBLE" if pa.types.is_floating(kind.value_type) else "BIGINT"
        return f"TRY_CAST(json_extract({header}, '{path}') AS {inner}[])"
    if pa.types.is_floating(kind):
        return f"TRY_CAST({first} AS DOUBLE)"
    if pa.types.is_integer(kind):
        return f"TRY_CAST({first} AS BIGINT)"
    if pa.types.is_date32(kind):
        return f"TRY_STRPTIME(left(trim({first}), 8), '%Y%m%d')::DATE"
    every = f"json_extract_string({header}, '{path}[*]')"
    return (
        f"nullif(CASE WHEN len({every}) = 1 THEN trim({first}, ' ' || chr(0))"
        f" ELSE array_to_string({every}, '\\') END, '')"
    )
