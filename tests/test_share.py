"""Sending archived instances onward (C-STORE SCU to dcmtk and to our own receiver)
and exporting a cohort as a DICOM File-set with DICOMDIR, read back by dcmdump and pydicom."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet

import catalog
from flows.cli import main
from flows.settings import Settings
from receiver.scp import start_receiver
from receiver.settings import ReceiverSettings
from tests.conftest import dcmtk_env, require_dcmtk
from tests.faults import land_and_autoload, make_instances
from tests.peers import run_storescp


@pytest.fixture
def archive(prefect_harness, settings: Settings, tmp_path: Path) -> dict[str, list[str]]:
    """A small archive: one generated CT series of 4, an RLE MR and a JPEG-LS MR."""
    sources = make_instances(tmp_path / "ct", 4, side=32)
    names = ("MR_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm")
    sources += [Path(get_testdata_file(n)) for n in names]
    assert land_and_autoload(settings, sources) == 6
    con = catalog.connect(settings.catalog_store())
    rows = con.execute(
        "SELECT study_instance_uid, sop_instance_uid, transfer_syntax_uid FROM instances"
    ).fetchall()
    studies: dict[str, list[str]] = {}
    for study, sop, _ in rows:
        studies.setdefault(study, []).append(sop)
    return studies


def received_uids(folder: Path) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in folder.iterdir()}


def test_send_a_study_and_a_query_to_dcmtk(archive, tmp_path, loopback_shim, capsys) -> None:
    ct_study = next(s for s, sops in archive.items() if len(sops) == 4)
    with run_storescp(tmp_path / "scp", loopback_shim, "VIEWER") as viewer:
        node = f"VIEWER@127.0.0.1:{viewer.port}"
        assert main(["send", node, "--study", ct_study]) == 0
        assert received_uids(tmp_path / "scp" / "in") == set(archive[ct_study])
        assert "sent 4, warnings 0, failed 0 of 4" in capsys.readouterr().out

        # storescp takes only uncompressed syntaxes: the RLE image is decompressed on the
        # way; JPEG-LS needs a decoder (pylibjpeg, GDCM) this machine lacks, so it is
        # reported, not lost.
        query = "SELECT archive_path FROM instances WHERE modality = 'MR'"
        assert main(["send", node, "--sql", query]) == 1
        out, err = capsys.readouterr()
        assert "sent 1, warnings 0, failed 1 of 2" in out
        assert "failed:" in out and "not sent" in out
        assert "1 instance(s) not sent (tried twice)" in err
    assert len(list((tmp_path / "scp" / "in").iterdir())) == 5


def test_refusals_are_retried_once_then_listed(archive, settings, tmp_path, capsys) -> None:
    ct_study = next(s for s, sops in archive.items() if len(sops) == 4)
    full = start_receiver(
        ReceiverSettings(ae_title="FULL", port=0, min_free_bytes=2**62), tmp_path / "full"
    )
    try:
        assert main(["send", f"FULL@127.0.0.1:{full.port}", "--study", ct_study]) == 1
    finally:
        full.stop(grace_seconds=2)
    out = capsys.readouterr().out
    assert "sent 0, warnings 0, failed 4 of 4" in out
    assert "4 x 0xA700 Failure: Refused: Out of Resources" in out
    assert full.counter.failed == 8  # each instance tried twice


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["send", "nowhere", "--study", "1.2.3"], "unknown node 'nowhere'"),
        (["send", "X@127.0.0.1:99999", "--study", "1.2.3"], "not a node: port"),
        (["send", "WAYTOOLONGAETITLE123@127.0.0.1:104", "--study", "1.2.3"], "not a node"),
        (
            ["send", "X@no-such-host.invalid:104", "--sql", "SELECT archive_path FROM instances"],
            "unknown host 'no-such-host.invalid'",
        ),
        (
            ["send", "X@127.0.0.1:9", "--sql", "SELECT archive_path FROM instances"],
            "connection refused",
        ),
        (["send", "X@127.0.0.1:9", "--study", "1.2.3"], "no archived instances for study 1.2.3"),
        (["send", "X@127.0.0.1:9", "--sql", "SELECT 1 AS x"], "must return an archive_path"),
        (["export", "--sql", "SELEKT", "--out", "x"], "SQL error"),
        (
            ["export", "--sql", "SELECT '/etc/hostname' AS archive_path", "--out", "x"],
            "not in the archive",
        ),
        (
            ["send", "X@127.0.0.1:9", "--sql", "COPY (SELECT 1) TO '/tmp/dicomflow-pwn.csv'"],
            "disabled by configuration",
        ),
        (
            [
                "send",
                "X@127.0.0.1:9",
                "--sql",
                "SELECT content AS archive_path FROM read_text('/etc/hostname')",
            ],
            "disabled by configuration",
        ),
    ],
)
def test_bad_selections_get_one_line(archive, args, message, capsys) -> None:
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_export_file_set_is_read_by_dcmtk_and_pydicom(archive, settings, tmp_path) -> None:
    out = tmp_path / "cohort"
    assert main(["export", "--sql", "SELECT * FROM instances", "--out", str(out)]) == 0
    require_dcmtk()
    dump = subprocess.run(
        ["dcmdump", str(out / "DICOMDIR")], env=dcmtk_env(), capture_output=True, text=True
    )
    assert dump.returncode == 0 and "DirectoryRecordSequence" in dump.stdout
    fileset = FileSet(out / "DICOMDIR")
    referenced = {Path(instance.path) for instance in fileset}
    on_disk = {p for p in out.rglob("*") if p.is_file()} - {
        out / "DICOMDIR",
        out / "manifest.parquet",
        out / "manifest.csv",
    }
    assert referenced == on_disk and len(referenced) == 6
    all_sops = {sop for sops in archive.values() for sop in sops}
    assert {i.SOPInstanceUID for i in fileset} == all_sops
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {row["sop_instance_uid"] for row in manifest} == all_sops
    for row in manifest:  # each row names its file in the set
        assert dcmread(out / row["fileset_path"]).SOPInstanceUID == row["sop_instance_uid"]
    assert main(["export", "--sql", "SELECT * FROM instances", "--out", str(out)]) == 1


def test_export_zip(archive, tmp_path) -> None:
    ct_study = next(s for s, sops in archive.items() if len(sops) == 4)
    out = tmp_path / "cohort.zip"
    assert main(["export", "--study", ct_study, "--zip", "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as zipped:
        names = zipped.namelist()
        assert "DICOMDIR" in names and "manifest.csv" in names
        assert len([n for n in names if n.startswith("PT")]) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    json.dumps(names)


def test_send_flow_publishes_its_outcome(archive, tmp_path, loopback_shim) -> None:
    from prefect.client.orchestration import get_client

    from flows.send import artifact_key, send_flow

    ct_study = next(s for s, sops in archive.items() if len(sops) == 4)
    with run_storescp(tmp_path / "scp", loopback_shim, "VIEWER") as viewer:
        node = f"VIEWER@127.0.0.1:{viewer.port}"
        assert send_flow(node=node, study=ct_study, batch_size=3) == {
            "sent": 4,
            "warnings": 0,
            "failed": 0,
        }
    assert received_uids(tmp_path / "scp" / "in") == set(archive[ct_study])
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = artifact_key(node)
    assert key == f"send-viewer-127-0-0-1-{viewer.port}"
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1
        )
    table = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    assert {"outcome": "sent", "instances": 4} in table


def test_export_to_a_relative_folder_and_implied_zip(archive, tmp_path, monkeypatch) -> None:
    ct_study = next(s for s, sops in archive.items() if len(sops) == 4)
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--study", ct_study, "--out", "cohort"]) == 0
    assert (tmp_path / "cohort" / "DICOMDIR").is_file()
    assert (tmp_path / "cohort" / "manifest.parquet").is_file()
    assert main(["export", "--study", ct_study, "--out", "cohort.zip"]) == 0
    assert zipfile.is_zipfile(tmp_path / "cohort.zip")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
