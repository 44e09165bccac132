"""Catalog rows from an anonymized dataset, driven by the column definitions in `catalog.schema`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from catalog.schema import TABLES, Column
from tasks import burned_in

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


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


def rows_for(ds: Dataset, file_facts: dict[str, Any], lineage: dict[str, Any]) -> dict[str, dict]:
    """One row per table (patients, studies, series, instances) for one archived instance.

    `file_facts` carries what only the archive knows (paths, size, hash, landed
    name); `lineage` carries ``run_id`` and ``recorded_at``.
    """
    rows = {table: header_values(ds, table) | lineage for table in TABLES}
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    meta = getattr(ds, "file_meta", None)
    rows["instances"].update(
        sop_class_name=sop_class.name if sop_class.keyword else None,
        has_pixel_data=any(k in ds for k in PIXEL_KEYWORDS),
        burned_in_suspect=burned_in.suspect(ds),
        transfer_syntax_uid=str(meta.TransferSyntaxUID) if meta is not None else None,
        **file_facts,
    )
    return rows


def utc_now() -> datetime:
    """The timestamp stamped on catalog rows."""
    return datetime.now(UTC)
