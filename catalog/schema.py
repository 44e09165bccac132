"""The catalog's tables: every column with its type, meaning and DICOM source.

One definition serves extraction (which keyword fills a column), the Parquet
schema, the DuckDB views and the documentation, so they cannot drift apart.

Versioned tables keep every row ever written (``<table>_history``); their view
``<table>`` shows the current version per key. A new version of a key names
the one it replaces in the `superseded` table, so the views never need to sort
or group the history to find what is current.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

from catalog import promoted

PARTITION_COLUMN = "ingest_date"
"""Hive partition of every table: the UTC date a row was written (a folder, not a column)."""

RECORD_UNITS = ("patient", "study", "series")


@dataclass(frozen=True)
class Column:
    """One catalog column: name, Arrow type, DICOM keyword it comes from (if any), meaning."""

    name: str
    type: pa.DataType
    keyword: str | None
    description: str


@dataclass(frozen=True)
class Table:
    """A catalog table: its columns, what identifies a record, and how parts are sorted.

    `key` is None for append-only tables (receipts, superseded), whose view shows
    every row. `sort` orders the rows inside each Parquet part so that row-group
    statistics let DuckDB skip what a filter on those columns cannot match.
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    key: str | None
    sort: tuple[str, ...]

    @property
    def versioned(self) -> bool:
        return self.key is not None

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def _lineage() -> list[Column]:
    return [
        Column("run_id", pa.string(), None, "Autoload flow run (or command) that wrote this row."),
        Column("recorded_at", pa.timestamp("us", tz="UTC"), None, "When this row was written."),
    ]


def _version(what: str) -> list[Column]:
    return [
        Column(
            "version",
            pa.int64(),
            None,
            f"Version of the {what}: 1 when first recorded, one more with each change.",
        ),
        Column(
            "created_at",
            pa.timestamp("us", tz="UTC"),
            None,
            f"When the {what}'s first version was recorded.",
        ),
    ]


def _counts(*levels: str) -> list[Column]:
    known = {
        "studies": Column("num_studies", pa.int64(), None, "Studies with current instances."),
        "series": Column("num_series", pa.int64(), None, "Series with current instances."),
        "instances": Column("num_instances", pa.int64(), None, "Current instances."),
    }
    return [
        *(known[level] for level in levels),
        Column("total_bytes", pa.int64(), None, "Sum of the current instances' file sizes."),
    ]


def _promoted(keywords: tuple[str, ...]) -> list[Column]:
    """Typed columns for header attributes also kept in dicom_json (catalog/promoted.py)."""
    return [
        Column(promoted.column_name(k), promoted.arrow_type(k), k, promoted.description(k))
        for k in keywords
    ]


_MODALITIES = Column(
    "modalities", pa.string(), None, "Modalities of the current instances, sorted, comma-separated."
)
_FOLDER = Column(
    "archive_folder",
    pa.string(),
    None,
    "Folder of this unit in the archive, relative to the archive root.",
)

PATIENTS = Table(
    "patients",
    "One version per change of a patient: first seen, or more of its instances arrived.",
    (
        Column(
            "patient_id", pa.string(), "PatientID", "Patient pseudonym (anonymized Patient ID)."
        ),
        Column("patient_sex", pa.string(), "PatientSex", "Patient's Sex (M, F, O or empty)."),
        Column("patient_age", pa.string(), "PatientAge", "Patient's Age at the study, e.g. 045Y."),
        *_counts("studies", "series", "instances"),
        _MODALITIES,
        _FOLDER,
        *_version("patient"),
        *_lineage(),
    ),
    key="patient_id",
    sort=("patient_id",),
)

STUDIES = Table(
    "studies",
    "One version per change of a study: first seen, a new series, more instances, a re-send.",
    (
        Column("study_instance_uid", pa.string(), "StudyInstanceUID", "Anonymized Study UID."),
        Column("patient_id", pa.string(), "PatientID", "Patient pseudonym."),
        Column("study_date", pa.date32(), "StudyDate", "Study Date."),
        Column("study_time", pa.string(), "StudyTime", "Study Time (HHMMSS.FFFFFF)."),
        Column("study_description", pa.string(), "StudyDescription", "Study Description."),
        *_counts("series", "instances"),
        _MODALITIES,
        _FOLDER,
        *_version("study"),
        *_lineage(),
    ),
    key="study_instance_uid",
    sort=("study_date", "patient_id"),
)

SERIES = Table(
    "series",
    "One version per change of a series: first seen, more instances, a re-sent instance.",
    (
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
        *_counts("instances"),
        _FOLDER,
        *_version("series"),
        *_lineage(),
    ),
    key="series_instance_uid",
    sort=("modality", "patient_id", "study_instance_uid"),
)

INSTANCES = Table(
    "instances",
    "One version per distinct content of an instance: a re-send whose anonymized bytes differ"
    " is a new version (the archive keeps the latest); an identical re-send adds nothing.",
    (
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
            "Anonymization profile, options and site rules applied (De-identification Method).",
        ),
        Column(
            "anonymization_profile",
            pa.string(),
            None,
            "De-identification profile applied, with the revision of its PS3.15 table.",
        ),
        Column(
            "anonymization_options",
            pa.string(),
            None,
            "Profile options applied (anonymize.options), sorted, comma-separated; empty for none.",
        ),
        Column("site_rules", pa.string(), None, "Name of the site rules applied, or none."),
        Column("transfer_syntax_uid", pa.string(), None, "Transfer syntax the file is stored in."),
        Column("archive_path", pa.string(), None, "Absolute path of the archived file."),
        Column("archive_relpath", pa.string(), None, "Path of the archived file in the archive."),
        Column("file_size", pa.int64(), None, "Size of the archived file in bytes."),
        Column("sha256", pa.string(), None, "SHA-256 of the archived file."),
        Column(
            "landed_name",
            pa.string(),
            None,
            "Landing-zone file the instance came from (a keyed hash when our receiver did not"
            " name it).",
        ),
        Column(
            "received_at",
            pa.timestamp("us", tz="UTC"),
            None,
            "When the receiver stored it (from the landed name; empty for files put in landing"
            " by hand).",
        ),
        Column(
            "calling_ae_title",
            pa.string(),
            None,
            "AE title of the sender (from its C-STORE receipt, or Source Application Entity"
            " Title in the file meta).",
        ),
        *_promoted(promoted.INSTANCE_KEYWORDS),
        Column(
            "dicom_json",
            pa.string(),
            None,
            "The whole anonymized header as DICOM JSON (PS3.18 F.2, keys are tags such as"
            ' "00180050"); bulk data (pixels, overlays, waveforms, documents) left out.',
        ),
        *_version("instance"),
        *_lineage(),
    ),
    key="sop_instance_uid",
    sort=("modality", "patient_id", "study_instance_uid", "series_instance_uid"),
)

RECORDS = Table(
    "records",
    "The configured record unit (catalog.record_unit: patient, study or series): one version"
    " each time a unit is first seen or more of it arrives.",
    (
        Column("record_unit", pa.string(), None, "patient, study or series."),
        Column(
            "record_key",
            pa.string(),
            None,
            "The unit's identifier: patient pseudonym, Study or Series Instance UID.",
        ),
        Column("patient_id", pa.string(), None, "Patient pseudonym."),
        Column("study_instance_uid", pa.string(), None, "Study UID (study and series units)."),
        Column("series_instance_uid", pa.string(), None, "Series UID (series units)."),
        *_counts("studies", "series", "instances"),
        _MODALITIES,
        _FOLDER,
        *_version("record"),
        Column("updated_at", pa.timestamp("us", tz="UTC"), None, "When this version was recorded."),
        *_lineage(),
    ),
    key="record_key",
    sort=("record_unit", "patient_id"),
)

RECEIPTS = Table(
    "receipts",
    "One row per C-STORE the receiver answered, from <data_dir>/logs/receipts.jsonl; no"
    " patient data.",
    (
        Column("receipt_time", pa.timestamp("us", tz="UTC"), None, "When the receiver answered."),
        Column("association_id", pa.string(), None, "Groups the receipts of one association."),
        Column("calling_ae_title", pa.string(), None, "AE title of the sender."),
        Column("called_ae_title", pa.string(), None, "AE title the sender addressed."),
        Column("peer", pa.string(), None, "Sender's address and port."),
        Column("sop_class_uid", pa.string(), None, "SOP Class UID of the C-STORE."),
        Column(
            "sop_instance_uid",
            pa.string(),
            None,
            "Anonymized SOP Instance UID (as the anonymizer maps it): joins instances.",
        ),
        Column("transfer_syntax_uid", pa.string(), None, "Transfer syntax of the transfer."),
        Column("bytes", pa.int64(), None, "Bytes received."),
        Column("status", pa.string(), None, "Status returned, e.g. 0x0000 (success), 0xA700."),
        Column("success", pa.bool_(), None, "Whether the status was Success (0x0000)."),
        Column(
            "landed_name",
            pa.string(),
            None,
            "Landing-zone file name written (empty when refused): joins instances.landed_name.",
        ),
        Column(
            "move_originator_ae_title",
            pa.string(),
            None,
            "For a C-MOVE sub-operation: AE title of the C-MOVE's requester.",
        ),
        Column(
            "move_originator_message_id",
            pa.int64(),
            None,
            "For a C-MOVE sub-operation: message id of that C-MOVE.",
        ),
        Column("job_id", pa.string(), None, "Retrieve job that caused the transfer, if any."),
        Column("ms", pa.float64(), None, "Milliseconds the receiver took to answer."),
        Column(
            "source_file",
            pa.string(),
            None,
            "Which receipts log the row came from (a hash of its first line).",
        ),
        Column("source_offset", pa.int64(), None, "Byte offset of the row in that log."),
        *_lineage(),
    ),
    key=None,
    sort=("calling_ae_title", "receipt_time"),
)

QUARANTINE = Table(
    "quarantine",
    "One version per change of a quarantined file: quarantined, or released (moved back to"
    " landing by `dicomflow quarantine retry`, or removed). The view shows the files in"
    " quarantine now.",
    (
        Column(
            "quarantine_name",
            pa.string(),
            None,
            "File name in the quarantine folder, without .dcm (its reason file adds"
            " .reason.json); a name our receiver did not give is a keyed hash.",
        ),
        Column("event", pa.string(), None, "quarantined or released."),
        Column(
            "reason",
            pa.string(),
            None,
            "Reason code: not-dicom, unreadable, truncated, empty-file, empty-dataset,"
            " missing-uid, invalid-uid, phi-gate, burned-in, processing-error.",
        ),
        Column(
            "detail",
            pa.string(),
            None,
            "What was wrong (names elements, never values; for a processing-error only the"
            " error's type: its message is in the quarantine reason file).",
        ),
        Column("quarantined_at", pa.timestamp("us", tz="UTC"), None, "When it was quarantined."),
        Column(
            "landed_name",
            pa.string(),
            None,
            "Landing-zone file it came from (a keyed hash when our receiver did not name it).",
        ),
        Column("file_size", pa.int64(), None, "Size of the quarantined file in bytes."),
        *_version("quarantine entry"),
        *_lineage(),
    ),
    key="quarantine_name",
    sort=("reason", "quarantined_at"),
)

SUPERSEDED = Table(
    "superseded",
    "Which versions are no longer current: written with the version that replaces them.",
    (
        Column("table_name", pa.string(), None, "Table of the replaced row."),
        Column("key", pa.string(), None, "Key of the replaced row."),
        Column("version", pa.int64(), None, "Version that is no longer current."),
        Column(
            "replaced_ingest_date",
            pa.date32(),
            None,
            "Partition (ingest_date) of the replaced row; empty where its writer did not say."
            " The current views look for the row in that partition only.",
        ),
        *_lineage(),
    ),
    key=None,
    sort=("table_name", "key"),
)

ALL_TABLES: tuple[Table, ...] = (
    PATIENTS,
    STUDIES,
    SERIES,
    INSTANCES,
    RECORDS,
    RECEIPTS,
    QUARANTINE,
    SUPERSEDED,
)
TABLE_BY_NAME: dict[str, Table] = {t.name: t for t in ALL_TABLES}

UNIT_TABLES = ("patients", "studies", "series")
"""Tables whose rows are filled from instance headers, with counts from current instances."""

TABLES: dict[str, list[Column]] = {t.name: list(t.columns) for t in ALL_TABLES}
KEYS: dict[str, str] = {t.name: t.key for t in ALL_TABLES if t.key is not None}
"""The column that identifies one record of each versioned table."""


def layout(table: str) -> str:
    """A fingerprint of the table's column names in order, kept with each part written.

    Parts of the current layout are read as they are; others (written before a
    column was added) are read by name, which costs DuckDB a footer read per part
    each time a query binds.
    """
    return hashlib.sha256(",".join(TABLE_BY_NAME[table].names).encode()).hexdigest()[:12]


def arrow_schema(table: str) -> pa.Schema:
    """The Parquet schema of `table`, with column descriptions as field metadata."""
    return pa.schema(
        pa.field(c.name, c.type, metadata={"description": c.description}) for c in TABLES[table]
    )


def duckdb_type(kind: pa.DataType) -> str:
    """The DuckDB type DuckDB reads an Arrow column type as (for NULLs a part lacks)."""
    if pa.types.is_list(kind):
        return f"{duckdb_type(kind.value_type)}[]"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP WITH TIME ZONE" if kind.tz else "TIMESTAMP"
    for test, name in (
        (pa.types.is_string, "VARCHAR"),
        (pa.types.is_int64, "BIGINT"),
        (pa.types.is_float64, "DOUBLE"),
        (pa.types.is_boolean, "BOOLEAN"),
        (pa.types.is_date32, "DATE"),
    ):
        if test(kind):
            return name
    raise TypeError(f"no DuckDB type for {kind}")
