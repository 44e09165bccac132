"""Catalog rows from an anonymized dataset, driven by the column definitions in `catalog.schema`."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID

from catalog.schema import TABLES, Column
from tasks import burned_in

HEADER_TABLES = ("patients", "studies", "series", "instances")
"""The tables whose rows an instance header fills."""

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
PIXEL_TAGS = frozenset(BaseTag(t) for t in (0x7FE00010, 0x7FE00008, 0x7FE00009))

BULK_THRESHOLD = 1024
"""Binary values longer than this in base64 (768 bytes) are bulk data: left out of the JSON."""

_BULK = "dicomflow:bulk-data-left-out"

LANDED_STAMP = re.compile(r"(\d{8}T\d{12})Z-")
"""The receiver names each landed file after the UTC time it stored it (receiver/landing.py)."""


def _first(value: Any) -> Any:
    if isinstance(value, MultiValue | list):
        return value[0] if len(value) else None
    return value


INT64_RANGE = range(-(2**63), 2**63)


def text(value: Any) -> str:
    """`value` as text Parquet can hold: undecodable bytes become U+FFFD."""
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _convert(value: Any, column: Column) -> Any:
    """A DICOM value as the column's Python type; values that do not fit become None."""
    if value is None or value == "":
        return None
    kind = column.type
    try:
        if pa.types.is_list(kind):  # a number with several values, e.g. Pixel Spacing
            item = float if pa.types.is_floating(kind.value_type) else int
            values = value if isinstance(value, MultiValue | list) else [value]
            return [item(v) for v in values] or None
        if pa.types.is_string(kind):
            if isinstance(value, MultiValue | list):
                return text("\\".join(str(v) for v in value))
            return text(value).strip("\x00 ") or None
        if pa.types.is_int64(kind):
            number = int(_first(value))
            return number if number in INT64_RANGE else None
        if pa.types.is_float64(kind):
            return float(_first(value))
        if pa.types.is_date32(kind):
            return datetime.strptime(str(_first(value)).strip()[:8], "%Y%m%d").date()
    except (TypeError, ValueError, OverflowError):
        return None
    raise TypeError(f"no conversion for {column.name} of type {kind}")


def header_values(ds: Dataset, table: str) -> dict[str, Any]:
    """Values of every keyword-backed column of `table`, taken from `ds`."""
    return {
        column.name: _convert(ds.get(column.keyword), column)
        for column in TABLES[table]
        if column.keyword is not None
    }


def _drop_bulk(node: Any) -> Any:
    """The JSON model without the elements our bulk data handler marked, at any depth."""
    if isinstance(node, dict):
        return {
            k: _drop_bulk(v)
            for k, v in node.items()
            if not (isinstance(v, dict) and v.get("BulkDataURI") == _BULK)
        }
    if isinstance(node, list):
        return [_drop_bulk(v) for v in node]
    if isinstance(node, float) and not math.isfinite(node):
        return None  # JSON has no NaN or infinity
    return node


def dicom_json(ds: Dataset) -> str:
    """The dataset (file meta excluded) in the DICOM JSON model of PS3.18 F.2, as pydicom
    writes it, with pixel data and other bulk data left out.

    Elements pydicom cannot convert are left out too, rather than the instance.
    """
    header = Dataset()
    for elem in ds:
        if elem.tag not in PIXEL_TAGS:
            header.add(elem)
    model = header.to_json_dict(
        bulk_data_threshold=BULK_THRESHOLD,
        bulk_data_element_handler=lambda _: _BULK,
        suppress_invalid_tags=True,
    )
    return text(json.dumps(_drop_bulk(model), ensure_ascii=False, separators=(",", ":")))


def received_at(landed_name: str) -> datetime | None:
    """When the receiver stored a landed file, from its name; None for other names."""
    found = LANDED_STAMP.match(landed_name)
    if not found:
        return None
    try:
        return datetime.strptime(found[1], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    except ValueError:
        return None


def source_ae_title(ds: Dataset) -> str | None:
    """Source Application Entity Title (0002,0016) of the file meta, where a sender wrote it."""
    meta = getattr(ds, "file_meta", None)
    value = meta.get("SourceApplicationEntityTitle") if meta is not None else None
    return text(value).strip() or None if value else None


def rows_for(ds: Dataset, file_facts: dict[str, Any], lineage: dict[str, Any]) -> dict[str, dict]:
    """One row per table (patients, studies, series, instances) for one archived instance.

    `file_facts` carries what only the archive knows (paths, size, hash, landed
    name, and whether pixel data follows a header read without it), and wins over
    what `ds` says; `lineage` carries ``run_id`` and ``recorded_at``.
    """
    rows = {table: header_values(ds, table) | lineage for table in HEADER_TABLES}
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    meta = getattr(ds, "file_meta", None)
    rows["instances"].update(
        {
            "sop_class_name": sop_class.name if sop_class.keyword else None,
            "has_pixel_data": any(k in ds for k in PIXEL_KEYWORDS),
            "burned_in_suspect": burned_in.suspect(ds),
            "transfer_syntax_uid": str(meta.TransferSyntaxUID) if meta is not None else None,
        }
        | file_facts
    )
    return rows


def utc_now() -> datetime:
    """The timestamp stamped on catalog rows."""
    return datetime.now(UTC)
