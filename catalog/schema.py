"""The catalog's tables: every column with its type, meaning and DICOM source.

One definition serves extraction (which keyword fills a column), the Parquet
schema and the documentation, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Column:
    """One catalog column: name, Arrow type, DICOM keyword it comes from (if any), meaning."""

    name: str
    type: pa.DataType
    keyword: str | None
    description: str


def _lineage() -> list[Column]:
    return [
        Column("run_id", pa.string(), None, "Autoload flow run that wrote this row."),
        Column("recorded_at", pa.timestamp("us", tz="UTC"), None, "When this row was written."),
    ]


PATIENT_COLUMNS = [
    Column("patient_id", pa.string(), "PatientID", "Patient pseudonym (anonymized Patient ID)."),
    Column("patient_sex", pa.string(), "PatientSex", "Patient's Sex (M, F, O or empty)."),
    Column("patient_age", pa.string(), "PatientAge", "Patient's Age at the study, e.g. 045Y."),
    *_lineage(),
]

STUDY_COLUMNS = [
    Column("study_instance_uid", pa.string(), "StudyInstanceUID", "Anonymized Study UID."),
    Column("patient_id", pa.string(), "PatientID", "Patient pseudonym."),
    Column("study_date", pa.date32(), "StudyDate", "Study Date."),
    Column("study_time", pa.string(), "StudyTime", "Study Time (HHMMSS.FFFFFF)."),
    Column("study_description", pa.string(), "StudyDescription", "Study Description."),
    *_lineage(),
]

SERIES_COLUMNS = [
    Column("series_instance_uid", pa.string(), "SeriesInstanceUID", "Anonymized Series UID."),
    Column("study_instance_uid", pa.string(), "StudyInstanceUID", "Anonymized Study UID."),
    Column("patient_id", pa.string(), "PatientID", "Patient pseudonym."),
    Column("modality", pa.string(), "Modality", "Modality (CT, MR, US, ...)."),
    Column("series_number", pa.int64(), "SeriesNumber", "Series Number."),
    Column("series_date", pa.date32(), "SeriesDate", "Series Date."),
    Column("series_description", pa.string(), "SeriesDescription", "Series Description."),
    Column("body_part_examined", pa.string(), "BodyPartExamined", "Body Part Examined."),
    Column("protocol_name", pa.string(), "ProtocolName", "Protocol Name."),
    Column("manufacturer", pa.string(), "Manufacturer", "Equipment manufacturer."),
    Column("manufacturer_model_name", pa.string(), "ManufacturerModelName", "Equipment model."),
    *_lineage(),
]

INSTANCE_COLUMNS = [
    Column("sop_instance_uid", pa.string(), "SOPInstanceUID", "Anonymized SOP Instance UID."),
    Column("series_instance_uid", pa.string(), "SeriesInstanceUID", "Anonymized Series UID."),
    Column("study_instance_uid", pa.string(), "StudyInstanceUID", "Anonymized Study UID."),
    Column("patient_id", pa.string(), "PatientID", "Patient pseudonym."),
    Column("sop_class_uid", pa.string(), "SOPClassUID", "SOP Class UID."),
    Column("sop_class_name", pa.string(), None, "SOP Class name from the DICOM dictionary."),
    Column("modality", pa.string(), "Modality", "Modality."),
    Column("instance_number", pa.int64(), "InstanceNumber", "Instance Number."),
    Column("content_date", pa.date32(), "ContentDate", "Content Date."),
    Column("rows", pa.int64(), "Rows", "Rows of the image matrix."),
    Column("columns", pa.int64(), "Columns", "Columns of the image matrix."),
    Column("number_of_frames", pa.int64(), "NumberOfFrames", "Number of Frames (multi-frame)."),
    Column("slice_thickness", pa.float64(), "SliceThickness", "Slice Thickness in mm."),
    Column(
        "has_pixel_data",
        pa.bool_(),
        None,
        "Whether the instance holds an image; false for headers sent without one.",
    ),
    Column(
        "burned_in_annotation",
        pa.string(),
        "BurnedInAnnotation",
        "Burned In Annotation as sent: YES, NO or empty.",
    ),
    Column(
        "burned_in_suspect",
        pa.bool_(),
        None,
        "Pixels may show identifying text: declared YES, or a capture-like kind"
        " (US, SC, XA, RF, ...) that does not declare NO. Review before sharing.",
    ),
    Column(
        "deidentification_method",
        pa.string(),
        "DeidentificationMethod",
        "Profile, options and site rules applied (De-identification Method).",
    ),
    Column("transfer_syntax_uid", pa.string(), None, "Transfer syntax the file is stored in."),
    Column("archive_path", pa.string(), None, "Absolute path of the archived file."),
    Column("archive_relpath", pa.string(), None, "Path of the archived file in the archive."),
    Column("file_size", pa.int64(), None, "Size of the archived file in bytes."),
    Column("sha256", pa.string(), None, "SHA-256 of the archived file."),
    Column("landed_name", pa.string(), None, "Landing-zone file the instance came from."),
    *_lineage(),
]

TABLES: dict[str, list[Column]] = {
    "patients": PATIENT_COLUMNS,
    "studies": STUDY_COLUMNS,
    "series": SERIES_COLUMNS,
    "instances": INSTANCE_COLUMNS,
}

KEYS: dict[str, str] = {
    "patients": "patient_id",
    "studies": "study_instance_uid",
    "series": "series_instance_uid",
    "instances": "sop_instance_uid",
}
"""The column that identifies one record of each table."""


def arrow_schema(table: str) -> pa.Schema:
    """The Parquet schema of `table`, with column descriptions as field metadata."""
    return pa.schema(
        pa.field(c.name, c.type, metadata={"description": c.description}) for c in TABLES[table]
    )
