"""The catalog as researchers and operators use it: records per unit, history, JSON
headers, receipts, quarantine, compaction under a live reader, check, object storage."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

import catalog
from catalog.check import check
from catalog.compact import compact
from catalog.store import CatalogStore
from flows.autoload import autoload
from flows.settings import Settings
from receiver.landing import LandingZone
from tasks.anonymize import archived_uids
from tasks.ingest import IngestContext, archive_files, clear_landing, record_instances
from tasks.operations import record_quarantine, record_receipts, uid_mapper
from tasks.policy import build_policy
from tasks.pseudonyms import Pseudonymizer
from tasks.quarantine import entries, release


def instance(patient: str, study: str, series: str, sop: str, modality: str = "CT") -> Dataset:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = patient
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.Modality = modality
    return ds


def encoded(ds: Dataset) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def land(landing: Path, *datasets: Dataset) -> list[Path]:
    zone = LandingZone(landing)
    return [zone.store(encoded(ds)) for ds in datasets]


def run_batch(ctx: IngestContext, paths: list[Path], unit: str = "study") -> int:
    outcome = archive_files(paths, ctx)
    recorded = record_instances(outcome.archived, ctx.store(), unit)
    clear_landing(outcome.archived)
    return recorded


def rows(con, sql: str, params: list | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


# Each unit arrives in two parts: a second study of the patient, a second series of the
# study, more instances of the series.
TWO_PARTS = {
    "patient": (
        [("P1", "1.2.9.1", "1.2.9.1.1", "1.2.9.1.1.1")],
        [("P1", "1.2.9.2", "1.2.9.2.1", "1.2.9.2.1.1")],
    ),
    "study": (
        [("P1", "1.2.9.1", "1.2.9.1.1", "1.2.9.1.1.1")],
        [
            ("P1", "1.2.9.1", "1.2.9.1.2", "1.2.9.1.2.1"),
            ("P1", "1.2.9.1", "1.2.9.1.2", "1.2.9.1.2.2"),
        ],
    ),
    "series": (
        [("P1", "1.2.9.1", "1.2.9.1.1", "1.2.9.1.1.1")],
        [
            ("P1", "1.2.9.1", "1.2.9.1.1", "1.2.9.1.1.2"),
            ("P1", "1.2.9.1", "1.2.9.1.1", "1.2.9.1.1.3"),
        ],
    ),
}
EXPECTED = {  # (studies, series, instances) of the record after both runs
    "patient": (2, 2, 2),
    "study": (1, 2, 3),
    "series": (1, 1, 3),
}


@pytest.mark.parametrize("unit", ["patient", "study", "series"])
def test_a_unit_sent_in_two_runs_is_one_record_with_two_versions(
    prefect_harness, settings: Settings, monkeypatch: pytest.MonkeyPatch, unit: str
) -> None:
    monkeypatch.setenv("DICOMFLOW_CATALOG__RECORD_UNIT", unit)
    first, second = TWO_PARTS[unit]
    land(settings.landing, *(instance(*ids) for ids in first))
    one = autoload()
    land(settings.landing, *(instance(*ids) for ids in second))
    land(settings.landing, instance("P2", "1.2.8.1", "1.2.8.1.1", "1.2.8.1.1.1", "MR"))
    two = autoload()
    assert (one.archived, two.archived) == (len(first), len(second) + 1)

    con = catalog.connect(settings.catalog_store())
    keys = Pseudonymizer(settings.salt())
    patient = keys.patient_id("P1")
    current = rows(
        con,
        "SELECT record_unit, version, num_studies, num_series, num_instances, modalities,"
        " created_at < updated_at, archive_folder FROM records WHERE patient_id = ?",
        [patient],
    )
    (record,) = current
    assert record[:6] == (unit, 2, *EXPECTED[unit], "CT")
    assert record[6], "updated after it was created"
    assert record[7].startswith(patient)
    history = rows(
        con,
        "SELECT version, num_instances, run_id, updated_at FROM records_history"
        " WHERE patient_id = ? ORDER BY version",
        [patient],
    )
    assert [h[:2] for h in history] == [(1, len(first)), (2, EXPECTED[unit][2])]
    assert history[0][2] != history[1][2], "each version names the autoload run that made it"
    assert rows(con, "SELECT count(*) FROM records") == [(2,)]  # and the other patient's

    # The unit tables follow the same rules, whatever the record unit.
    table = {"patient": "patients", "study": "studies", "series": "series"}[unit]
    versions = rows(con, f"SELECT max(version) FROM {table} WHERE patient_id = ?", [patient])
    assert versions == [(2,)]
    studies = rows(con, "SELECT num_instances FROM studies WHERE patient_id = ?", [patient])
    assert sum(n for (n,) in studies) == EXPECTED[unit][2]


def test_a_resent_instance_with_other_content_is_a_new_version(ctx: IngestContext) -> None:
    landing = ctx.archive_dir.parent / "landing"
    ds = instance("P1", "1.2.9.1", "1.2.9.1.1", "1.2.9.1.1.1")
    run_batch(ctx, land(landing, ds))
    assert run_batch(ctx, land(landing, ds)) == 0, "the same content again adds nothing"
    ds.SliceThickness = "2.5"  # a correction the anonymized copy keeps
    assert run_batch(ctx, land(landing, ds)) == 1
    con = catalog.connect(ctx.catalog_dir)
    assert rows(con, "SELECT version FROM instances") == [(2,)]
    assert rows(con, "SELECT version FROM instances_history ORDER BY 1") == [(1,), (2,)]
    assert rows(con, "SELECT version, num_instances FROM series") == [(2, 1)]
    assert rows(con, "SELECT num_instances FROM records") == [(1,)]


def test_whole_header_is_queryable_as_dicom_json(ctx: IngestContext) -> None:
    landing = ctx.archive_dir.parent / "landing"
    thin = instance("P1", "1.2.9.1", "1.2.9.1.1", "1.2.9.1.1.1")
    thin.SliceThickness = "0.625"
    mr = dcmread(get_testdata_file("MR_small.dcm"))
    mr.SequenceName = "*tfl3d1"
    run_batch(ctx, land(landing, thin, instance("P1", "1.2.9.1", "1.2.9.1.2", "1.2.9.1.2.1"), mr))
    con = catalog.connect(ctx.catalog_dir)
    thin_series = rows(
        con,
        "SELECT DISTINCT series_instance_uid FROM instances WHERE modality = 'CT'"
        " AND TRY_CAST(dicom_value(dicom_json, 'SliceThickness') AS DOUBLE) < 1",
    )
    assert thin_series == rows(
        con,
        "SELECT series_instance_uid FROM instances WHERE modality = 'CT' AND slice_thickness < 1",
    )
    assert len(thin_series) == 1
    assert rows(
        con,
        "SELECT count(*) FROM instances WHERE modality = 'MR'"
        " AND dicom_value(dicom_json, 'SequenceName') = '*tfl3d1'",
    ) == [(1,)]
    by_maker = rows(
        con,
        "SELECT dicom_value(dicom_json, 'Manufacturer'),"
        " dicom_value(dicom_json, 'ManufacturerModelName'), count(*)"
        " FROM instances GROUP BY ALL ORDER BY 3 DESC",
    )
    assert by_maker[0][2] == 2 and sum(n for *_, n in by_maker) == 3
    (header,) = rows(con, "SELECT dicom_json FROM instances WHERE modality = 'MR'")[0]
    model = json.loads(header)
    assert "7FE00010" not in model and model["00080060"] == {"vr": "CS", "Value": ["MR"]}
    lineage = rows(
        con,
        "SELECT DISTINCT run_id, anonymization_profile, anonymization_options,"
        " site_rules, received_at IS NOT NULL FROM instances",
    )
    assert lineage == [("run-1", lineage[0][1], "", "none", True)]
    assert lineage[0][1].startswith("PS3.15 E.1-1 Basic Profile")


def receipt(sop: str, status: str = "0x0000", landing: str | None = "x.dcm", **more) -> str:
    record = {
        "time": "2026-03-02T10:00:00.000+00:00",
        "association_id": "a1",
        "calling_ae": "CT_SCANNER_1",
        "called_ae": "DICOMFLOW",
        "peer": "10.0.0.7:4100",
        "sop_class": "1.2.840.10008.5.1.4.1.1.2",
        "sop_instance": sop,
        "transfer_syntax": "1.2.840.10008.1.2.1",
        "bytes": 1000,
        "status": status,
        "landing_path": f"/data/landing/{landing}" if landing else None,
        "move_originator_ae": None,
        "move_originator_message_id": None,
        "job_id": None,
        "ms": 2.5,
    } | more
    return json.dumps(record) + "\n"


def test_receipts_are_read_once_across_rotation_and_hold_no_original_uid(
    tmp_path: Path,
) -> None:
    store = CatalogStore(tmp_path / "catalog")
    logs = tmp_path / "logs"
    logs.mkdir()
    keys = Pseudonymizer(b"salt")
    policy = build_policy([], None)
    mapper = uid_mapper(policy, keys)
    log = logs / "receipts.jsonl"
    log.write_text(receipt("1.2.3.1") + "{damaged\n" + receipt("1.2.3.2", "0xA700", None))
    with log.open("a") as fh:
        fh.write(receipt("1.2.3.3")[:40])  # the receiver is writing this line now
    assert record_receipts(store, logs, mapper, "run-1") == 2
    assert record_receipts(store, logs, mapper, "run-2") == 0
    with log.open("a") as fh:
        fh.write(receipt("1.2.3.3")[40:])
    log.rename(logs / "receipts.jsonl.1")  # rotated: the rest is read from the copy
    (logs / "receipts.jsonl").write_text(receipt("1.2.3.4", calling_ae="MR_1"))
    assert record_receipts(store, logs, mapper, "run-3") == 2
    con = catalog.connect(store)
    got = rows(
        con,
        "SELECT sop_instance_uid, success, status, landed_name, calling_ae_title,"
        " run_id FROM receipts ORDER BY calling_ae_title = 'MR_1', source_offset",
    )
    expected_uid = archived_uids(policy, keys, {"SOPInstanceUID": "1.2.3.1"})["SOPInstanceUID"]
    assert len(got) == 4
    assert got[0][:5] == (expected_uid, True, "0x0000", "x.dcm", "CT_SCANNER_1")
    assert rows(con, "SELECT count(*) FROM receipts WHERE NOT success") == [(1,)]
    everything = str(rows(con, "SELECT * FROM receipts"))
    assert not any(f"'1.2.3.{i}'" in everything for i in range(1, 5)), "originals stay out"


def test_quarantine_table_follows_the_folder_and_retry(ctx: IngestContext) -> None:
    landing = ctx.archive_dir.parent / "landing"
    landing.mkdir(parents=True)
    received = LandingZone(landing).store(b"not dicom at all" * 10)
    by_hand = landing / "Jane Doe chest.dcm"  # dropped in by hand, named after the patient
    by_hand.write_bytes(b"junk" * 75)
    run_batch(ctx, [received, by_hand])
    store, keys = ctx.store(), ctx.keys()
    assert record_quarantine(store, ctx.quarantine_dir, "run-1", keys) == 2
    assert record_quarantine(store, ctx.quarantine_dir, "run-1", keys) == 0
    con = catalog.connect(store)
    got = rows(
        con,
        "SELECT quarantine_name, reason, landed_name, file_size FROM quarantine ORDER BY file_size",
    )
    assert got[0] == (received.stem, "not-dicom", received.name, 160)
    assert got[1][1:] == ("not-dicom", got[1][2], 300)
    assert got[1][0].startswith("hashed-") and got[1][2].startswith("hashed-")
    assert "Jane" not in str(rows(con, "SELECT * FROM quarantine_history"))
    (entry,) = [e for e in entries(ctx.quarantine_dir) if e.name == received.stem]
    assert release(entry, landing) == received
    assert record_quarantine(store, ctx.quarantine_dir, "retry", keys) == 1
    con = catalog.connect(store)
    assert rows(con, "SELECT file_size FROM quarantine") == [(300,)]
    assert rows(
        con,
        "SELECT event FROM quarantine_history WHERE quarantine_name = ? ORDER BY version",
        [received.stem],
    ) == [("quarantined",), ("released",)]


READER = r"""
import json, os, sys, time
import catalog
location, stop = sys.argv[1], sys.argv[2]
while not os.path.exists(stop):
    try:
        con = catalog.connect(location)
        counts = con.sql(
            "SELECT (SELECT count(*) FROM instances), (SELECT count(*) FROM instances_history),"
            " (SELECT coalesce(sum(num_instances), 0) FROM records),"
            " (SELECT count(*) FROM series)"
        ).fetchall()[0]
        con.close()
        print(json.dumps([int(c) for c in counts]), flush=True)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    time.sleep(0.1)
"""


def test_reader_in_another_process_never_sees_counts_go_down(
    prefect_harness, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DICOMFLOW_AUTOLOAD__BATCH_SIZE", "6")
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, settings.catalog_location, str(stop)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    compactions: list[int] = []
    done = threading.Event()

    def compact_meanwhile() -> None:
        while not done.is_set():
            compactions.append(compact(settings.catalog_store()).merged)
            time.sleep(0.3)

    compactor = threading.Thread(target=compact_meanwhile)
    try:
        series = [f"1.2.9.1.{s}" for s in range(4)]
        land(
            settings.landing,
            *(instance("P1", "1.2.9.1", series[i % 4], f"1.2.9.1.{i % 4}.{i}") for i in range(24)),
        )
        compactor.start()
        assert autoload().archived == 24  # in 4 batches, each changing the same study
    finally:
        done.set()
        compactor.join()
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    seen = [json.loads(line) for line in out.splitlines()]
    errors = [s for s in seen if isinstance(s, dict)]
    assert not errors, errors[:3]
    assert len(seen) >= 5, "the reader kept reading while autoload and compaction ran"
    for before, after in itertools.pairwise(seen):
        assert all(a >= b for a, b in zip(after, before, strict=True)), (before, after)
    for instances, history, in_records, _ in seen:
        assert instances == history == in_records, "a whole batch or none of it"
    assert seen[-1] == [24, 24, 24, 4]
    assert sum(compactions) > 0, "compaction merged parts while the reader read"


def test_compaction_merges_parts_keeps_rows_and_deletes_only_after_the_grace(
    ctx: IngestContext,
) -> None:
    landing = ctx.archive_dir.parent / "landing"
    for i in range(4):
        run_batch(ctx, land(landing, instance("P1", "1.2.9.1", "1.2.9.1.1", f"1.2.9.1.1.{i}")))
    store = ctx.store()
    before = store.read_manifest()
    con = catalog.connect(store)
    counts = rows(
        con,
        "SELECT (SELECT count(*) FROM instances_history),"
        " (SELECT count(*) FROM series_history), (SELECT count(*) FROM series)",
    )
    result = compact(store, keep_replaced_seconds=3600)
    after = store.read_manifest()
    assert result.merged == len(before.parts) > len(after.parts) == result.written
    assert {p.table for p in after.parts} == {p.table for p in before.parts}
    assert all(Path(store.uri(p.path)).exists() for p in before.parts), "kept for old readers"
    assert rows(con, "SELECT count(*) FROM instances_history") == [(4,)]  # old snapshot works
    assert (
        rows(
            catalog.connect(store),
            "SELECT (SELECT count(*) FROM instances_history),"
            " (SELECT count(*) FROM series_history), (SELECT count(*) FROM series)",
        )
        == counts
    )
    assert compact(store, keep_replaced_seconds=3600).merged == 0
    gone = compact(store, keep_replaced_seconds=0)
    assert gone.deleted == len(before.parts)
    assert not any(Path(store.uri(p.path)).exists() for p in before.parts)
    assert set(store.part_files()) == {p.path for p in after.parts}


def test_check_finds_a_deleted_a_corrupted_and_an_unlisted_file(ctx: IngestContext) -> None:
    landing = ctx.archive_dir.parent / "landing"
    run_batch(
        ctx,
        land(
            landing, *(instance("P1", "1.2.9.1", "1.2.9.1.1", f"1.2.9.1.1.{i}") for i in range(4))
        ),
    )
    assert check(ctx.store(), ctx.archive_dir).problems == []
    deleted, corrupted, resized, *_ = sorted(ctx.archive_dir.rglob("*.dcm"))
    deleted.unlink()
    data = bytearray(corrupted.read_bytes())
    data[-1] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    resized.write_bytes(resized.read_bytes() + b"\0\0")
    stray = ctx.archive_dir / "P9" / "stray.dcm"
    stray.parent.mkdir()
    stray.write_bytes(b"x")
    result = check(ctx.store(), ctx.archive_dir)
    found = {(p.kind, p.path) for p in result.problems}
    relative = {
        p: p.relative_to(ctx.archive_dir).as_posix() for p in (deleted, corrupted, resized, stray)
    }
    assert found == {
        ("missing-file", relative[deleted]),
        ("hash-differs", relative[corrupted]),
        ("size-differs", relative[resized]),
        ("no-row", relative[stray]),
    }
    sizes_only = {p.kind for p in check(ctx.store(), ctx.archive_dir, hashes=False).problems}
    assert sizes_only == {"missing-file", "size-differs", "no-row"}


def test_catalog_on_an_fsspec_url(ctx: IngestContext) -> None:
    url = f"memory://dicomflow-test-{os.getpid()}/catalog"
    on_url = dataclasses.replace(ctx, catalog_dir=url)
    landing = ctx.archive_dir.parent / "landing"
    for i in range(2):
        run_batch(on_url, land(landing, instance("P1", "1.2.9.1", "1.2.9.1.1", f"1.2.9.1.1.{i}")))
    store = on_url.store()
    assert store.local_root is None and not (ctx.archive_dir.parent / "catalog").exists()
    assert rows(catalog.connect(store), "SELECT num_instances FROM records") == [(2,)]
    assert compact(store).merged > 0
    assert rows(catalog.connect(url), "SELECT count(*) FROM instances") == [(2,)]
    assert check(store, ctx.archive_dir).problems == []


REAL_FILES = (
    "CT_small.dcm",
    "693_UNCR.dcm",
    "MR_small.dcm",
    "MR2_UNCR.dcm",
    "emri_small.dcm",
    "US1_UNCR.dcm",
    "JPEG2000.dcm",
    "rtdose.dcm",
)


def keyword_columns() -> list[tuple[str, str]]:
    """(column, the same value from dicom_json in SQL) for every keyword-backed column."""
    from catalog.promoted import json_sql
    from catalog.schema import INSTANCES

    return [
        (c.name, json_sql(c.keyword, c.type)) for c in INSTANCES.columns if c.keyword is not None
    ]


def test_promoted_columns_hold_the_values_of_the_json_header(ctx: IngestContext) -> None:
    landing = ctx.archive_dir.parent / "landing"
    files = [dcmread(get_testdata_file(name)) for name in REAL_FILES]
    assert run_batch(ctx, land(landing, *files)) == len(files)
    con = catalog.connect(ctx.catalog_dir)
    for column, from_json in keyword_columns():
        differ = rows(
            con,
            f"SELECT sop_instance_uid, {column}, {from_json} FROM instances"
            f" WHERE {column} IS DISTINCT FROM {from_json}",
        )
        assert differ == [], column
    filled = dict(
        rows(
            con,
            "SELECT 'kvp', count(kvp) FROM instances UNION ALL"
            " SELECT 'pixel_spacing', count(pixel_spacing) FROM instances UNION ALL"
            " SELECT 'image_type', count(image_type) FROM instances UNION ALL"
            " SELECT 'echo_time', count(echo_time) FROM instances UNION ALL"
            " SELECT 'manufacturer', count(manufacturer) FROM instances",
        )
    )
    assert all(filled.values()), filled
    ct = rows(
        con,
        "SELECT kvp, pixel_spacing, image_type, manufacturer, x_ray_tube_current FROM instances"
        " WHERE modality = 'CT' AND rows = 128",
    )
    original = dcmread(get_testdata_file("CT_small.dcm"))
    assert ct == [
        (
            float(original.KVP),
            [float(v) for v in original.PixelSpacing],
            "\\".join(original.ImageType),
            original.Manufacturer,
            int(original.XRayTubeCurrent),
        )
    ]


VERSIONED = ("patients", "studies", "series", "instances", "records", "quarantine")


def current_by_definition(con, table: str) -> str:
    """A current view as docs/catalog.md defines it: its history without superseded rows."""
    from catalog.schema import KEYS

    return (
        f"SELECT h.* FROM {table}_history h ANTI JOIN (SELECT key, version FROM superseded"
        f" WHERE table_name = '{table}') s ON h.{KEYS[table]} = s.key AND h.version = s.version"
    )


def assert_views_as_defined(store: CatalogStore) -> None:
    con = catalog.connect(store)
    for table in VERSIONED:
        view = "quarantine_current" if table == "quarantine" else table
        defined = current_by_definition(con, table)
        for a, b in ((view, f"({defined})"), (f"({defined})", view)):
            assert rows(con, f"SELECT count(*) FROM (FROM {a} EXCEPT ALL FROM {b})") == [(0,)]
        assert rows(con, f"SELECT count(*) FROM {view}") == rows(
            con, f"SELECT count(*) FROM ({defined})"
        )


def test_compaction_sorts_current_from_superseded_rows_and_views_keep_their_rows(
    ctx: IngestContext,
) -> None:
    from catalog.current import current_parts

    landing = ctx.archive_dir.parent / "landing"
    first = [instance("P1", "1.2.9.1", "1.2.9.1.1", f"1.2.9.1.1.{i}") for i in range(3)]
    run_batch(ctx, land(landing, *first, instance("P2", "1.2.8.1", "1.2.8.1.1", "1.2.8.1.1.1")))
    first[0].SliceThickness = "2.5"  # re-sent with other content: a new version
    run_batch(ctx, land(landing, first[0]))
    store = ctx.store()
    assert_views_as_defined(store)
    history = rows(catalog.connect(store), "SELECT count(*) FROM instances_history")
    ((named, placed),) = rows(
        catalog.connect(store),
        "SELECT count(*), count(replaced_ingest_date) FILTER (WHERE replaced_ingest_date ="
        " (SELECT max(ingest_date) FROM instances_history)) FROM superseded",
    )
    assert named == placed == 5, "each superseded row says which partition holds its row"

    compact(store)
    manifest = store.read_manifest()
    replaced = {p.table for p in manifest.parts if p.replaced}
    assert replaced == {"instances", "series", "studies", "patients", "records"}
    assert all(
        p.current_as_of == manifest.generation - 1 or p.replaced or p.table in ("superseded",)
        for p in manifest.parts
    )
    con = catalog.connect(store)
    assert rows(con, "SELECT count(*) FROM instances_history") == history
    plans = current_parts(con, store, manifest)
    assert all(not plan.check for plan in plans.values()), "nothing left to join"
    assert_views_as_defined(store)

    # A later batch supersedes rows of the compacted parts: the views join those again.
    first[1].SliceThickness = "3.0"
    run_batch(ctx, land(landing, first[1], instance("P1", "1.2.9.1", "1.2.9.1.1", "1.2.9.1.1.9")))
    assert_views_as_defined(store)
    assert rows(
        catalog.connect(store),
        "SELECT version, num_instances FROM series WHERE num_instances = 4",
    ) == [(3, 4)]
    compact(store)
    assert_views_as_defined(store)
    con = catalog.connect(store)
    assert all(not plan.check for plan in current_parts(con, store, store.read_manifest()).values())
    assert compact(store).merged == 0, "a sorted catalog stays as it is"


def test_parts_of_the_old_schema_read_and_compaction_fills_their_promoted_columns(
    ctx: IngestContext,
) -> None:
    import pyarrow.parquet as pq

    from catalog.promoted import INSTANCE_KEYWORDS, column_name

    landing = ctx.archive_dir.parent / "landing"
    files = [dcmread(get_testdata_file(name)) for name in REAL_FILES[:4]]
    run_batch(ctx, land(landing, *files))
    store = ctx.store()
    promoted = [column_name(k) for k in INSTANCE_KEYWORDS]
    ingested = rows(
        catalog.connect(store),
        f"SELECT sop_instance_uid, {', '.join(promoted)} FROM instances ORDER BY 1",
    )
    # The catalog as the code before promoted columns wrote it: parts without those
    # columns, a manifest without generations.
    (part,) = store.read_manifest().of("instances")
    path = Path(store.uri(part.path))
    pq.write_table(pq.read_table(path).drop_columns(promoted), path)
    manifest = json.loads((ctx.catalog_dir / "_manifest.json").read_text())
    for entry in manifest["parts"]:
        for new in ("generation", "current_as_of", "replaced", "layout"):
            entry.pop(new)
    (ctx.catalog_dir / "_manifest.json").write_text(json.dumps(manifest))

    con = catalog.connect(store)
    assert rows(con, "SELECT count(*), count(manufacturer), count(rows) FROM instances") == [
        (len(files), 0, len(files))
    ]
    assert_views_as_defined(store)
    run_batch(ctx, land(landing, instance("P1", "1.2.9.1", "1.2.9.1.1", "1.2.9.1.1.1")))
    compact(store)
    con = catalog.connect(store)
    migrated = rows(
        con,
        f"SELECT sop_instance_uid, {', '.join(promoted)} FROM instances"
        " WHERE sop_instance_uid IN (SELECT unnest(?)) ORDER BY 1",
        [[r[0] for r in ingested]],
    )
    assert migrated == ingested, "filled from dicom_json as ingest fills them"
    listed = store.read_manifest().of("instances")
    assert all(store.columns(p.path) >= set(promoted) for p in listed), "migrated on disk"
