"""The whole path on real data: C-STORE over loopback, autoload flow, archive, catalog."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

import catalog
from flows.autoload import autoload
from flows.demo import group_by_study, sample_files
from flows.settings import Settings
from receiver.landing import LandingZone
from receiver.scp import Receiver
from receiver.storescu import send_files
from tasks.pseudonyms import Pseudonymizer

PLACEHOLDERS = {"ANONYMOUS", "ANONYMIZED", "ANON", "NONE", "UNKNOWN", "TEST", "PATIENT"}
"""Generic values some sample files use as names or IDs; not identifying, so not checked."""


def archived_files(settings: Settings) -> list[Path]:
    return sorted(settings.archive.rglob("*.dcm"))


def catalog_files(settings: Settings) -> list[Path]:
    """Every file of the catalog: its parts and its manifest."""
    assert settings.catalog_folder is not None
    return sorted(p for p in settings.catalog_folder.rglob("*") if p.is_file())


def identifying_values(ds: Dataset) -> set[str]:
    """The patient's names and IDs, and every person name, as they arrived."""
    values = {str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))}
    values |= {str(e.value) for e in ds.iterall() if e.VR == "PN" and e.value}
    return {v.strip() for v in values if _distinctive(v.strip())}


def _distinctive(value: str) -> bool:
    """Long enough not to turn up by chance inside dates, numbers or codes."""
    if value.upper() in PLACEHOLDERS:
        return False
    return len(value) >= 6 or (len(value) >= 4 and any(c.isalpha() for c in value))


def snapshot_landing(settings: Settings) -> dict[str, Dataset | None]:
    """Each landed file's header, or None where pydicom cannot read it."""
    seen: dict[str, Dataset | None] = {}
    for path in LandingZone(settings.landing).completed():
        try:
            seen[path.name] = dcmread(path, stop_before_pixels=True)
        except Exception:
            seen[path.name] = None
    return seen


def quarantined_names(settings: Settings) -> dict[str, str]:
    reasons = {}
    for path in settings.quarantine.glob("*.reason.json"):
        record = json.loads(path.read_text())
        reasons[record["landed_name"]] = record["reason"]
    return reasons


@pytest.fixture
def sent_corpus(settings: Settings, receiver: Receiver) -> dict[str, Dataset | None]:
    """The pydicom and pydicom-data sample files, sent study by study over C-STORE."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for paths in group_by_study(sample_files()).values():
            send_files(paths, "127.0.0.1", receiver.port, "DICOMFLOW")
        (settings.landing / "20000101T000000000000Z-garbage.dcm").write_bytes(b"\x00garbage" * 64)
        return snapshot_landing(settings)


def test_corpus_end_to_end(prefect_harness, settings: Settings, sent_corpus) -> None:
    landed = sent_corpus
    assert len(landed) >= 150, "the sample corpus should land well over 150 files"

    summary = autoload()

    quarantined = quarantined_names(settings)
    assert quarantined["20000101T000000000000Z-garbage.dcm"] == "not-dicom"
    for name in quarantined:
        assert (settings.quarantine / name).exists()
    accepted = {
        str(ds.SOPInstanceUID)
        for name, ds in landed.items()
        if name not in quarantined and ds is not None
    }
    keys = Pseudonymizer(settings.salt())
    expected = {keys.uid(uid) for uid in accepted}

    files = archived_files(settings)
    con = catalog.connect(settings.catalog_location)
    in_catalog = {row[0] for row in con.sql("SELECT sop_instance_uid FROM instances").fetchall()}
    history_rows = con.execute("SELECT count(*) FROM instances_history").fetchall()[0][0]

    assert len(files) == len(in_catalog) == len(expected) >= 100
    assert in_catalog == expected
    assert {p.stem for p in files} == expected
    # The corpus holds some instances in several transfer syntaxes: other bytes, new versions.
    assert history_rows == len(in_catalog) + summary.versions, "one row per instance version"
    assert summary.archived == len(expected)
    assert summary.versions > 0
    handled = summary.archived + summary.versions + summary.duplicates
    assert handled + sum(summary.quarantined.values()) == len(landed)
    assert LandingZone(settings.landing).completed() == []

    modalities = con.execute("SELECT count(DISTINCT modality) FROM instances").fetchall()[0][0]
    assert modalities >= 5
    paths = con.sql("SELECT archive_path, file_size FROM instances").fetchall()
    assert all(Path(p).is_file() and Path(p).stat().st_size == size for p, size in paths)

    originals = set().union(*(identifying_values(ds) for ds in landed.values() if ds is not None))
    assert originals, "the corpus should carry patient names and IDs to check against"
    for path in files:
        ds = dcmread(path)
        assert not [e for e in ds.iterall() if e.tag.is_private], path
        texts = [str(e.value) for e in ds.iterall() if e.VR not in ("OB", "OW", "OF", "UN", "SQ")]
        texts += [str(e.value) for e in ds.file_meta]
        leaks = {(o, t) for o in originals for t in texts if o in t}
        assert not leaks, f"{path.name} still holds {sorted(leaks)[:3]}"

    # A second run finds nothing to do and changes nothing.
    parts_before = catalog_files(settings)
    again = autoload()
    assert (again.landed, again.archived, again.recorded) == (0, 0, 0)
    assert archived_files(settings) == files
    assert catalog_files(settings) == parts_before


def test_resent_corpus_is_not_archived_twice(
    prefect_harness, settings: Settings, receiver: Receiver
) -> None:
    sample = [p for p in sample_files() if p.name in {"CT_small.dcm", "MR_small.dcm", "rtplan.dcm"}]
    send_files(sample, "127.0.0.1", receiver.port, "DICOMFLOW")
    first = autoload()
    send_files(sample, "127.0.0.1", receiver.port, "DICOMFLOW")
    second = autoload()
    assert first.archived == 3 and second.archived == 0 and second.duplicates == 3
    assert len(archived_files(settings)) == 3
    con = catalog.connect(settings.catalog_location)
    assert con.execute("SELECT count(*) FROM instances_history").fetchall()[0][0] == 3
