"""Burned-in annotation and the re-identification table, through the autoload steps."""

from __future__ import annotations

import csv
import dataclasses
import json
import stat
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from catalog.query import connect
from receiver.landing import LandingZone
from tasks import burned_in
from tasks.ingest import IngestContext, archive_files, record_instances
from tasks.pseudonyms import Pseudonymizer


def instance(modality: str = "CT", burned_in: str | None = None) -> Dataset:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    return ds


def land(ctx: IngestContext, *datasets: Dataset) -> list[Path]:
    folder = ctx.archive_dir.parent / "landing"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets):
        paths.append(folder / f"{n}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def reasons(ctx: IngestContext) -> list[str]:
    return [json.loads(p.read_text())["reason"] for p in ctx.quarantine_dir.glob("*.reason.json")]


def test_declared_burned_in_is_quarantined_by_default(ctx: IngestContext) -> None:
    outcome = archive_files(land(ctx, instance("US", "YES"), instance("US", "NO")), ctx)
    assert outcome.new == 1
    assert reasons(ctx) == ["burned-in"]


def test_flag_mode_archives_and_the_catalog_says_which_to_review(ctx: IngestContext) -> None:
    ctx = dataclasses.replace(ctx, burned_in="flag")
    sent = [
        instance("US", "YES"),  # declared
        instance("US"),  # a kind that often has text, silent about it
        instance("US", "NO"),  # declared clean
        instance("CT"),  # not a capture-like kind
    ]
    outcome = archive_files(land(ctx, *sent), ctx)
    assert outcome.new == 4 and reasons(ctx) == []
    record_instances(outcome.archived, ctx.catalog_dir)
    rows = (
        connect(ctx.catalog_dir)
        .execute(
            "SELECT modality, burned_in_annotation, burned_in_suspect FROM instances"
            " ORDER BY modality, burned_in_annotation NULLS FIRST"
        )
        .fetchall()
    )
    assert rows == [
        ("CT", None, False),
        ("US", None, True),
        ("US", "NO", False),
        ("US", "YES", True),
    ]


def test_mapping_table_is_off_by_default(ctx: IngestContext) -> None:
    archive_files(land(ctx, instance()), ctx)
    assert not list(ctx.archive_dir.parent.rglob("*.csv"))


def test_mapping_table_is_private_and_outside_the_catalog(
    ctx: IngestContext, tmp_path: Path
) -> None:
    mapping_dir = tmp_path / "data" / "secrets" / "mapping"
    ctx = dataclasses.replace(ctx, mapping_dir=mapping_dir)
    one, two = instance(), instance()
    outcome = archive_files(land(ctx, one, two), ctx)
    record_instances(outcome.archived, ctx.catalog_dir)
    (table,) = mapping_dir.glob("*.csv")
    assert stat.S_IMODE(mapping_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(table.stat().st_mode) == 0o600
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 1  # one patient, one study: distinct rows only
    (row,) = rows
    archived = dcmread(next(ctx.archive_dir.rglob("*.dcm")))
    assert row["original_patient_id"] == one.PatientID
    assert row["original_study_instance_uid"] == one.StudyInstanceUID
    assert row["patient_id"] == archived.PatientID
    assert row["study_instance_uid"] == archived.StudyInstanceUID
    catalog_bytes = b"".join(p.read_bytes() for p in ctx.catalog_dir.rglob("*") if p.is_file())
    assert one.PatientID.encode() not in catalog_bytes


@pytest.mark.parametrize(
    "value",
    ["yes", " YES ", "YES\x00", ["NO", "YES"], b"YES "],
    ids=["lower", "spaces", "nul-padded", "second-value", "bytes"],
)
def test_burned_in_yes_is_yes_however_it_is_written(value: object) -> None:
    ds = Dataset()
    ds.add(DataElement(0x00280301, "OB" if isinstance(value, bytes) else "CS", value))
    assert burned_in.declared(ds) == "YES"
    assert burned_in.suspect(ds)


def test_a_yes_among_values_is_quarantined(ctx: IngestContext) -> None:
    outcome = archive_files(land(ctx, instance("CT", "NO\\yes")), ctx)
    assert outcome.new == 0 and reasons(ctx) == ["burned-in"]


def test_landed_names_not_given_by_the_receiver_are_recorded_as_a_keyed_hash(
    ctx: IngestContext,
) -> None:
    """A file dropped into landing by hand can be named after the patient; the catalog
    records such a name only as a keyed hash, our receiver's own names as they are."""
    folder = ctx.archive_dir.parent / "landing"
    received = LandingZone(folder).store(b"")
    instance().save_as(received, enforce_file_format=True)
    dropped = folder / "Holmes_Sherlock_19610704.dcm"
    instance().save_as(dropped, enforce_file_format=True)
    outcome = archive_files([received, dropped], ctx)
    record_instances(outcome.archived, ctx.catalog_dir)
    names = {
        row[0]
        for row in connect(ctx.catalog_dir).execute("SELECT landed_name FROM instances").fetchall()
    }
    assert names == {received.name, Pseudonymizer(ctx.salt).landed_name(dropped.name)}
    catalog_bytes = b"".join(p.read_bytes() for p in ctx.catalog_dir.rglob("*") if p.is_file())
    assert b"Holmes" not in catalog_bytes
