"""Hostile and broken input through the autoload steps: quarantined, contained, not leaked."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import catalog
from tasks.ingest import IngestContext, archive_files, clear_landing, record_instances
from tasks.pseudonyms import Pseudonymizer


def ct() -> Dataset:
    return dcmread(get_testdata_file("CT_small.dcm"))


def land(ctx: IngestContext, ds: Dataset, name: str = "in.dcm") -> Path:
    landing = ctx.archive_dir.parent / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / name
    ds.save_as(path)
    return path


def run_batch(ctx: IngestContext, paths: list[Path]):
    outcome = archive_files(paths, ctx)
    record_instances(outcome.archived, ctx.catalog_dir)
    clear_landing(outcome.archived)
    return outcome


def reasons(ctx: IngestContext) -> list[str]:
    return sorted(
        json.loads(p.read_text())["reason"] for p in ctx.quarantine_dir.glob("*.reason.json")
    )


def everything_written(tmp_path: Path) -> set[Path]:
    return {p for p in tmp_path.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "value",
    [
        "1.2.840.10008.1/../../../../../../escaped",
        "1.2.840.10008.5.1.4.1.1.2",  # a SOP class UID used as an instance UID
        "1.2.3." + "9" * 250,  # longer than any file name may be
        "dccc9599087131742838cc1162a630fea87ba9bf61ac09bfda90d4adfa5ddaed",  # not a UID
    ],
)
def test_malformed_instance_uids_get_new_ones_and_nothing_escapes(
    ctx: IngestContext, tmp_path: Path, value: str
) -> None:
    ds = ct()
    ds.SOPInstanceUID = value
    outcome = run_batch(ctx, [land(ctx, ds, "odd.dcm"), land(ctx, ct(), "good.dcm")])
    assert outcome.new == 2 and reasons(ctx) == []
    archived = {p.stem for p in ctx.archive_dir.rglob("*.dcm")}
    assert all(uid.startswith("2.25.") for uid in archived)
    assert all(p.is_relative_to(tmp_path / "data") for p in everything_written(tmp_path))


def test_uid_encoded_with_another_vr_is_replaced_too(ctx: IngestContext, tmp_path: Path) -> None:
    ds = ct()
    del ds.SOPInstanceUID
    ds.add(DataElement(0x00080018, "LO", "../../../escaped"))
    outcome = run_batch(ctx, [land(ctx, ds)])
    assert outcome.new == 1
    assert all(p.is_relative_to(tmp_path / "data") for p in everything_written(tmp_path))


def test_two_instance_uids_in_one_element_are_refused(ctx: IngestContext) -> None:
    ds = ct()
    ds.SOPInstanceUID = ["1.2.3.4", "1.2.3.5"]
    run_batch(ctx, [land(ctx, ds)])
    assert reasons(ctx) == ["invalid-uid"]


def test_header_without_its_image_is_archived_and_marked(ctx: IngestContext) -> None:
    ds = ct()
    del ds.PixelData  # as some senders (and pydicom's own sample files) do
    outcome = run_batch(ctx, [land(ctx, ds)])
    assert outcome.new == 1
    assert outcome.archived[0].rows["instances"]["has_pixel_data"] is False


def test_values_that_do_not_fit_the_catalog_do_not_block_the_batch(ctx: IngestContext) -> None:
    ds = ct()
    ds.add(DataElement(0x00200013, "IS", "99999999999999999999"))  # beyond int64
    landing = ctx.archive_dir.parent / "landing"
    landing.mkdir(parents=True)
    odd_name = landing / Path(b"bad\xffname.dcm".decode("utf-8", "surrogateescape"))
    ds.save_as(odd_name)
    outcome = run_batch(ctx, [odd_name])
    assert outcome.new == 1
    con = catalog.connect(ctx.catalog_dir)
    uid = outcome.archived[0].sop_instance_uid
    assert con.execute(
        "SELECT count(*) FROM instances WHERE sop_instance_uid = ?", [uid]
    ).fetchall() == [(1,)]
    assert not odd_name.exists()


def test_same_instance_under_two_patients_is_archived_once(ctx: IngestContext) -> None:
    """The second copy is a new version (its bytes differ): it replaces the first, which
    leaves the first patient's folder, and both versions stay in the history."""
    first, second = ct(), ct()
    first.PatientID, second.PatientID = "P1", "P2"
    outcome = run_batch(ctx, [land(ctx, first, "a.dcm"), land(ctx, second, "b.dcm")])
    assert (outcome.new, outcome.versions, outcome.duplicates) == (1, 1, 0)
    (archived,) = ctx.archive_dir.rglob("*.dcm")
    keys = Pseudonymizer(ctx.salt)
    assert archived.relative_to(ctx.archive_dir).parts[0] == keys.patient_id("P2")
    con = catalog.connect(ctx.catalog_dir)
    history = con.sql("SELECT version, patient_id FROM instances_history ORDER BY 1").fetchall()
    assert history == [(1, keys.patient_id("P1")), (2, keys.patient_id("P2"))]
    current = con.sql("SELECT patient_id, num_instances FROM patients ORDER BY 2").fetchall()
    assert current == [(keys.patient_id("P1"), 0), (keys.patient_id("P2"), 1)]


def test_quarantine_never_overwrites(ctx: IngestContext) -> None:
    landing = ctx.archive_dir.parent / "landing"
    landing.mkdir(parents=True)
    for content in (b"first garbage" * 30, b"second garbage" * 30):
        path = landing / "same.dcm"
        path.write_bytes(content)
        run_batch(ctx, [path])
    kept = sorted(p.read_bytes()[:6] for p in ctx.quarantine_dir.glob("*.dcm"))
    assert kept == [b"first ", b"second"]
    assert len(list(ctx.quarantine_dir.glob("*.reason.json"))) == 2


def test_very_long_landed_name_is_quarantined(ctx: IngestContext) -> None:
    landing = ctx.archive_dir.parent / "landing"
    landing.mkdir(parents=True)
    path = landing / ("x" * 240 + ".dcm")
    path.write_bytes(b"garbage" * 10)
    run_batch(ctx, [path])
    assert reasons(ctx) == ["not-dicom"]
    assert not path.exists()


def test_identifying_values_hidden_in_odd_places_do_not_survive(ctx: IngestContext) -> None:
    secret_name, secret_id = "DOE^JOHN", "PID12345"
    ds = ct()
    ds.PatientName, ds.PatientID = secret_name, secret_id
    ds.preamble = f"{secret_name} {secret_id}".encode().ljust(128, b"\0")
    ds.add(DataElement(0x00080090, "LO", secret_name))  # ReferringPhysicianName, wrong VR
    ds.add(DataElement(0x00081070, "SH", "DOE^JANE"))  # OperatorsName, wrong VR
    inner = Dataset()
    inner.PatientName, inner.PatientID = secret_name, secret_id
    ds.add(DataElement(0x0022FF10, "UN", b"DOE^JOHN PID12345 "))  # unknown public element
    ds.ReferencedPatientSequence = Sequence([inner])
    ds.add(DataElement(0xFFFCFFFC, "OB", f"{secret_name}{secret_id}".encode()))  # trailing pad
    original_study = ds.StudyInstanceUID
    ds.add(DataElement(0x00081155, "LO", "1.2.3.4.5.6.7.8.9"))  # a referenced UID as LO
    outcome = run_batch(ctx, [land(ctx, ds)])
    assert outcome.new == 1
    (archived,) = ctx.archive_dir.rglob("*.dcm")
    raw = archived.read_bytes()
    for secret in (b"DOE^JOHN", b"DOE^JANE", b"PID12345", b"1.2.3.4.5.6.7.8.9"):
        assert secret not in raw, secret
    assert original_study.encode() not in raw


def test_phi_gate_quarantines_a_name_left_in_free_text(ctx: IngestContext, tmp_path: Path) -> None:
    site_rules = tmp_path / "site.toml"
    site_rules.write_text('[attributes]\nStudyDescription = "keep"\n')
    ctx = dataclasses.replace(ctx, site_rules=site_rules)
    ds = ct()
    ds.PatientName = "Holmes^Sherlock"
    ds.StudyDescription = "CT chest for Sherlock Holmes"  # kept by a site rule, caught by the gate
    run_batch(ctx, [land(ctx, ds)])
    assert reasons(ctx) == ["phi-gate"]
    (record,) = [json.loads(p.read_text()) for p in ctx.quarantine_dir.glob("*.reason.json")]
    assert "StudyDescription" in record["detail"] and "Sherlock" not in record["detail"]
    assert not list(ctx.archive_dir.rglob("*.dcm"))


def test_phi_gate_ignores_chance_digits_in_new_uids(ctx: IngestContext) -> None:
    ds = ct()
    new_sop = Pseudonymizer(ctx.salt).uid(ds.SOPInstanceUID)
    ds.PatientID = new_sop[-8:]  # a numeric ID that the new SOP Instance UID contains
    ds.StudyDescription = "CT chest"
    outcome = run_batch(ctx, [land(ctx, ds)])
    assert outcome.new == 1 and reasons(ctx) == []


def test_phi_gate_ignores_a_patient_already_called_like_our_dummies(ctx: IngestContext) -> None:
    ds = ct()
    ds.PatientName = "Anonymized"
    ds.InstitutionName = "General Hospital"  # becomes ANONYMIZED, like the original name
    outcome = run_batch(ctx, [land(ctx, ds)])
    assert outcome.new == 1 and reasons(ctx) == []


def test_data_we_anonymized_before_loads_again(ctx: IngestContext) -> None:
    """An archive of ours, exported and imported elsewhere: its ANON- pseudonym is no leak."""
    ds = ct()
    ds.PatientName = ds.PatientID = "ANON-OLDPSEUDONYM7Q2K"
    outcome = run_batch(ctx, [land(ctx, ds)])
    assert outcome.new == 1 and reasons(ctx) == []


def test_phi_gate_does_not_flag_what_the_anonymizer_wrote(
    ctx: IngestContext, tmp_path: Path
) -> None:
    """A patient called like a word of the site's replacement or of the method markers."""
    rules = tmp_path / "site.toml"
    rules.write_text(
        'name = "Smith lab cohort"\n'
        '[attributes]\nInstitutionName = { replace = "St Mary Hospital" }\n'
    )
    ctx = dataclasses.replace(ctx, site_rules=rules, options=("retain-long-modified-dates",))
    ds = ct()
    ds.PatientName = "Smith^Mary"
    ds.OtherPatientNames = "Dates^Hospital"
    outcome = run_batch(ctx, [land(ctx, ds)])
    assert outcome.new == 1 and reasons(ctx) == []
