"""C-ECHO, C-FIND and C-MOVE as SCU against real PACS peers: Orthanc and dcmtk's dcmqrscp.

Both peers are loaded over C-STORE with studies made from real sample files and know
our receiver (on a port fixed for the module) as a move destination.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.settings import Settings
from receiver.landing import LandingZone
from receiver.move import move, move_identifier
from receiver.query import QueryError, build_identifier, find, parse_keys
from receiver.scp import Receiver
from receiver.scu import AssociationRejected, NodeUnreachable, Peer, echo
from receiver.settings import RemoteNode, ScuSettings
from tests.conftest import free_port
from tests.peers import CORPUS, Site

PEERS = ("orthanc", "dcmqrscp")


def landed(settings: Settings) -> list[Path]:
    return LandingZone(settings.landing).completed()


# --- C-ECHO -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PEERS)
def test_echo_each_peer(pacs_site: Site, name: str) -> None:
    assert echo(pacs_site.peer(name)) > 0


def test_echo_closed_port_says_refused() -> None:
    node = RemoteNode(ae_title="NOBODY", host="127.0.0.1", port=free_port())
    with pytest.raises(NodeUnreachable, match="connection refused"):
        echo(Peer("nobody", node, "DICOMFLOW", ScuSettings()))


def test_echo_wrong_called_ae_title_is_rejected_with_reason(pacs_site: Site) -> None:
    node = RemoteNode(
        ae_title="NOT_ORTHANC", host="127.0.0.1", port=pacs_site.peers["orthanc"].port
    )
    with pytest.raises(AssociationRejected, match=r"[Cc]alled AE title not recognised"):
        echo(Peer("wrong", node, "DICOMFLOW", ScuSettings()))


# --- C-FIND -----------------------------------------------------------------------------


def _find(pacs_site: Site, name: str, root: str, level: str, **keys: str) -> list[dict[str, str]]:
    identifier = build_identifier(root, level, parse_keys(f"{k}={v}" for k, v in keys.items()))  # type: ignore[arg-type]
    result = find(pacs_site.peer(name), root, identifier)  # type: ignore[arg-type]
    assert result.meaning.startswith("0x0000")
    return [{e.keyword: str(e.value) for e in m if e.keyword} for m in result.matches]


@pytest.mark.parametrize("name", PEERS)
def test_find_patients_with_wildcard(pacs_site: Site, name: str) -> None:
    found = _find(pacs_site, name, "patient", "PATIENT", PatientID="QR*")
    assert sorted(m["PatientID"] for m in found) == sorted({s.patient_id for s in CORPUS})


@pytest.mark.parametrize("name", PEERS)
@pytest.mark.parametrize("root", ["patient", "study"])
def test_find_studies_by_date_range(pacs_site: Site, name: str, root: str) -> None:
    january = [s for s in CORPUS if s.patient_id == "QR001" and s.study_date < "20240201"]
    found = _find(pacs_site, name, root, "STUDY", PatientID="QR001", StudyDate="20240101-20240115")
    assert [m["AccessionNumber"] for m in found] == [
        s.accession for s in january if s.study_date <= "20240115"
    ]
    assert len(_find(pacs_site, name, root, "STUDY", PatientID="QR001", StudyDate="20240101-")) == 2


@pytest.mark.parametrize("name", PEERS)
def test_find_studies_single_character_wildcard(pacs_site: Site, name: str) -> None:
    found = _find(pacs_site, name, "study", "STUDY", AccessionNumber="ACC00?")
    assert sorted(m["AccessionNumber"] for m in found) == sorted(s.accession for s in CORPUS)


@pytest.mark.parametrize("name", PEERS)
@pytest.mark.parametrize("root", ["patient", "study"])
def test_find_series_and_images(pacs_site: Site, name: str, root: str) -> None:
    study = pacs_site.studies[0]
    keys = {"PatientID": study.spec.patient_id, "StudyInstanceUID": study.study_uid}
    series = _find(pacs_site, name, root, "SERIES", **keys)
    assert sorted(m["SeriesInstanceUID"] for m in series) == sorted(study.series)
    for series_uid, files in study.series.items():
        images = _find(pacs_site, name, root, "IMAGE", **keys, SeriesInstanceUID=series_uid)
        assert len(images) == len(files)


def test_find_series_counts_from_orthanc(pacs_site: Site) -> None:
    study = pacs_site.studies[0]
    series = _find(pacs_site, "orthanc", "study", "SERIES", StudyInstanceUID=study.study_uid)
    counts = {m["SeriesInstanceUID"]: int(m["NumberOfSeriesRelatedInstances"]) for m in series}
    assert counts == {uid: len(files) for uid, files in study.series.items()}


def test_find_refuses_what_the_hierarchy_does_not_allow() -> None:
    with pytest.raises(QueryError, match="needs -k StudyInstanceUID"):
        build_identifier("study", "SERIES", {})
    with pytest.raises(QueryError, match="needs -k PatientID"):
        build_identifier("patient", "STUDY", {"PatientID": "QR*"})
    with pytest.raises(QueryError, match="no PATIENT level"):
        build_identifier("study", "PATIENT", {})
    with pytest.raises(QueryError, match="YYYYMMDD"):
        parse_keys(["StudyDate=2024-01-01"])
    with pytest.raises(QueryError, match="not a DICOM keyword"):
        parse_keys(["PatientIdentity=1"])


# --- C-MOVE -----------------------------------------------------------------------------


def _receipts(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "dicomflow.receipts"]


@pytest.mark.parametrize("name", PEERS)
def test_move_study_series_and_instance(
    pacs_site: Site,
    name: str,
    settings: Settings,
    pacs_receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="dicomflow.receipts")
    ledger = settings.move_ledger()
    study = pacs_site.studies[0]
    (series_uid, series_files), *_ = study.series.items()
    targets = [
        ("STUDY", {"StudyInstanceUID": study.study_uid}, len(study.files)),
        (
            "SERIES",
            {"StudyInstanceUID": study.study_uid, "SeriesInstanceUID": series_uid},
            len(series_files),
        ),
        (
            "IMAGE",
            {
                "StudyInstanceUID": study.study_uid,
                "SeriesInstanceUID": series_uid,
                "SOPInstanceUID": _sop_uid(series_files[0]),
            },
            1,
        ),
    ]
    total = 0
    for level, keys, count in targets:
        with ledger.opened("DICOMFLOW", f"job-{level}") as message_id:
            result = move(
                pacs_site.peer(name),
                "study",
                move_identifier("study", level, keys),
                "DICOMFLOW",
                message_id,
            )  # type: ignore[arg-type]
        assert result.ok, result.meaning
        assert result.progress.completed == count and result.progress.failed == 0
        total += count
        assert len(landed(settings)) == total
    jobs = [r["job_id"] for r in _receipts(caplog)]
    assert jobs == ["job-STUDY"] * len(study.files) + ["job-SERIES"] * len(series_files) + [
        "job-IMAGE"
    ]


def _sop_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.mark.parametrize(("name", "status"), [("orthanc", 0xC000), ("dcmqrscp", 0xA801)])
def test_move_to_unknown_destination_fails_clearly(
    pacs_site: Site, name: str, status: int, settings: Settings, pacs_receiver: Receiver
) -> None:
    identifier = move_identifier(
        "study", "STUDY", {"StudyInstanceUID": pacs_site.studies[1].study_uid}
    )
    result = move(pacs_site.peer(name), "study", identifier, "NOBODY")
    assert result.category == "Failure" and result.status == status
    assert result.progress.completed == 0
    assert not landed(settings)
    if status == 0xA801:
        assert result.permanent and "destination" in (result.hint or "")


# --- the command line -------------------------------------------------------------------


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    env["DICOMFLOW_ANONYMIZE__SALT"] = "test-salt"
    command = [sys.executable, "-m", "flows.cli", "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def site_config(pacs_site: Site, tmp_path: Path) -> Path:
    lines = [f'data_dir = "{tmp_path / "data"}"', f"[receiver]\nport = {pacs_site.receiver_port}"]
    for name, node in pacs_site.nodes().items():
        lines.append(f"[nodes.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in node.items()]
    path = tmp_path / "site.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_nodes_and_echo(site_config: Path) -> None:
    listed = cli(site_config, "nodes")
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["dcmqrscp", "orthanc"]
    echoed = cli(site_config, "echo", "orthanc", "--count", "2")
    assert echoed.returncode == 0, echoed.stderr
    assert echoed.stdout.count("success in") == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["echo", f"NOBODY@127.0.0.1:{free_port()}"], "connection refused"),
        (["echo", "nowhere"], "unknown node 'nowhere'"),
        (["find", "orthanc", "--level", "SERIES"], "needs -k StudyInstanceUID"),
        (["find", "orthanc", "-k", "StudyDate=2024-01"], "YYYYMMDD"),
        (["move", "orthanc"], "say what to move"),
    ],
)
def test_cli_failures_are_one_line(site_config: Path, args: list[str], expected: str) -> None:
    result = cli(site_config, *args)
    assert result.returncode == 1
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_bad_node_table_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[nodes.pacs]\nae_title = "PACS"\nhost = "127.0.0.1"\n')
    result = cli(config, "nodes")
    assert result.returncode == 2
    assert "nodes.pacs.port" in result.stderr and "Traceback" not in result.stderr


def test_cli_find_writes_csv(pacs_site: Site, site_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "studies.csv"
    result = cli(site_config, "find", "dcmqrscp", "-k", "PatientID=QR001", "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = out.read_text().splitlines()
    assert rows[0].split(",")[:3] == ["PatientID", "PatientName", "StudyInstanceUID"]
    expected = sorted(s.study_uid for s in pacs_site.studies if s.spec.patient_id == "QR001")
    assert sorted(r.split(",")[2] for r in rows[1:]) == expected


def test_cli_move_starts_a_receiver_when_none_runs(
    pacs_site: Site, site_config: Path, tmp_path: Path
) -> None:
    study = pacs_site.studies[1]
    result = cli(site_config, "move", "orthanc", "--study", study.study_uid)
    assert result.returncode == 0, result.stderr
    assert f"completed {len(study.files)}, failed 0" in result.stdout
    assert len(LandingZone(tmp_path / "data" / "landing").completed()) == len(study.files)
    unknown = cli(site_config, "move", "dcmqrscp", "--study", study.study_uid, "--dest", "NOBODY")
    assert unknown.returncode == 1 and "Move destination unknown" in unknown.stderr
