"""The optional re-identification table: original identifiers beside their pseudonyms.

Off by default. When a study must be traced back (a finding to report to the
patient's physician, a withdrawn consent), authorized staff look the pseudonym up
here. The table lives under ``<data_dir>/secrets/mapping/`` (owner-only folder and
files), never in the catalog or the archive, one CSV file per batch.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from pydicom.dataset import Dataset

from receiver.durable import write_atomic


@dataclass(frozen=True)
class MappingRow:
    """One instance's study: identifiers as received and as archived."""

    original_patient_id: str
    original_patient_name: str
    original_accession_number: str
    original_study_instance_uid: str
    patient_id: str = ""
    study_instance_uid: str = ""

    def completed(self, anonymized: Dataset) -> MappingRow:
        """The row with the pseudonyms the anonymized dataset carries."""
        return replace(
            self,
            patient_id=str(anonymized.get("PatientID", "")),
            study_instance_uid=str(anonymized.get("StudyInstanceUID", "")),
        )


def mapping_row(ds: Dataset) -> MappingRow:
    """The original identifiers of `ds`, before anonymization."""
    return MappingRow(
        original_patient_id=str(ds.get("PatientID", "") or ""),
        original_patient_name=str(ds.get("PatientName", "") or ""),
        original_accession_number=str(ds.get("AccessionNumber", "") or ""),
        original_study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
    )


def write_mapping(folder: Path, run_id: str, rows: list[MappingRow]) -> Path:
    """Write the distinct `rows` of one batch as CSV, readable by the owner only."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(MappingRow)])
    writer.writeheader()
    for row in sorted(set(rows), key=lambda r: (r.patient_id, r.study_instance_uid)):
        writer.writerow(asdict(row))
    first = min(rows, key=lambda r: r.study_instance_uid)
    name = f"{run_id}-{first.study_instance_uid[-12:]}-{len(rows)}.csv"
    path = write_atomic(folder / name, buffer.getvalue().encode("utf-8"))
    os.chmod(path, 0o600)
    return path
