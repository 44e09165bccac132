"""Our archive as a Query/Retrieve SCP: dcmtk's findscu, movescu and getscu, and Orthanc,
query and retrieve from the catalog over real sockets, anonymized values only."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

import catalog
from flows.settings import Settings
from receiver.matching import MatchError, build_query, response
from receiver.move import move, move_identifier
from receiver.qr_scp import Archive
from receiver.scp import Receiver, start_receiver
from receiver.scu import Peer
from receiver.settings import ReceiverSettings, RemoteNode, ScuSettings
from tests.conftest import free_port, run_dcmtk
from tests.faults import land_and_autoload
from tests.peers import make_corpus, run_orthanc, run_storescp


@pytest.fixture
def archived(prefect_harness, settings: Settings, tmp_path: Path, monkeypatch) -> dict[str, Any]:
    """The 2-patient, 3-study, 4-series, 9-instance corpus, archived with full dates."""
    monkeypatch.setenv("DICOMFLOW_ANONYMIZE__OPTIONS", '["retain-long-full-dates"]')
    files = [f for study in make_corpus(tmp_path / "corpus") for f in study.files]
    assert land_and_autoload(settings, files) == 9
    con = catalog.connect(settings.catalog_store())
    studies = con.execute(
        "SELECT study_instance_uid, patient_id, study_date FROM studies ORDER BY study_date"
    ).fetchall()
    return {"studies": studies, "settings": Settings()}


@pytest.fixture
def qr_scp(archived, tmp_path: Path, loopback_shim: Path) -> Iterator[dict[str, Any]]:
    """Our receiver serving the archive, and a dcmtk storescp it may C-MOVE to."""
    settings: Settings = archived["settings"]
    with run_storescp(tmp_path / "viewer", loopback_shim, "VIEWER") as viewer:
        nodes = {"viewer": RemoteNode(ae_title="VIEWER", host="127.0.0.1", port=viewer.port)}
        scp = start_receiver(
            ReceiverSettings(port=0),
            settings.landing,
            None,
            Archive(settings.catalog_store(), nodes),
        )
        try:
            yield {"scp": scp, "viewer": tmp_path / "viewer" / "in", **archived}
        finally:
            scp.stop(grace_seconds=2)


def findscu(scp: Receiver, root: str, *keys: str) -> list[dict[str, str]]:
    """findscu's answers, each as {keyword-ish tag: value}."""
    args = ["findscu", root, "-aec", "DICOMFLOW"]
    for key in keys:
        args += ["-k", key]
    result = run_dcmtk(*args, "127.0.0.1", str(scp.port))
    assert result.returncode == 0, result.stderr
    answers: list[dict[str, str]] = []
    for line in (result.stdout + result.stderr).splitlines():
        if "Find Response:" in line and "Pending" in line:
            answers.append({})
        found = re.search(r"\(([0-9a-f]{4},[0-9a-f]{4})\) \w\w (?:\[(.*?)\]|\(no value)", line)
        if found and answers:
            answers[-1][found[1]] = (found[2] or "").strip("\x00 ")
    return answers


def retrieve_study(tool: str, study_uid: str, port: int, *options: str) -> Any:
    """movescu or getscu (Study Root) for one study from our SCP on `port`."""
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
    return run_dcmtk(tool, "-S", "-aec", "DICOMFLOW", *options, *keys, "127.0.0.1", str(port))


PATIENT_ID, STUDY_UID, STUDY_DATE, SERIES_UID, SOP_UID = (
    "0010,0020",
    "0020,000d",
    "0008,0020",
    "0020,000e",
    "0008,0018",
)


def test_findscu_patient_root_each_level(qr_scp) -> None:
    scp = qr_scp["scp"]
    patients = findscu(
        scp,
        "-P",
        "QueryRetrieveLevel=PATIENT",
        "PatientID",
        "PatientName",
        "NumberOfPatientRelatedStudies",
    )
    assert len(patients) == 2
    assert all(p[PATIENT_ID].startswith("ANON-") for p in patients)
    assert sorted(p["0020,1200"] for p in patients) == ["1", "2"]
    patient = next(p[PATIENT_ID] for p in patients if p["0020,1200"] == "2")
    studies = findscu(
        scp,
        "-P",
        "QueryRetrieveLevel=STUDY",
        f"PatientID={patient}",
        "StudyInstanceUID",
        "StudyDate",
    )
    assert sorted(s[STUDY_DATE] for s in studies) == ["20240105", "20240120"]
    series = findscu(
        scp,
        "-P",
        "QueryRetrieveLevel=SERIES",
        f"PatientID={patient}",
        f"StudyInstanceUID={studies[0][STUDY_UID]}",
        "SeriesInstanceUID",
        "Modality",
    )
    assert len(series) in (1, 2) and all(s["0008,0060"] in ("CT", "MR") for s in series)
    images = findscu(
        scp,
        "-P",
        "QueryRetrieveLevel=IMAGE",
        f"PatientID={patient}",
        f"StudyInstanceUID={studies[0][STUDY_UID]}",
        f"SeriesInstanceUID={series[0][SERIES_UID]}",
        "SOPInstanceUID",
    )
    assert len(images) >= 2 and all(i[SOP_UID].startswith("2.25.") for i in images)


def test_findscu_study_root_matching_rules(qr_scp) -> None:
    scp = qr_scp["scp"]
    everything = findscu(scp, "-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")
    assert len(everything) == 3
    january = findscu(
        scp, "-S", "QueryRetrieveLevel=STUDY", "StudyDate=20240101-20240131", "StudyInstanceUID"
    )
    assert len(january) == 2
    assert len(findscu(scp, "-S", "QueryRetrieveLevel=STUDY", "StudyDate=20240201-")) == 1
    assert len(findscu(scp, "-S", "QueryRetrieveLevel=STUDY", "PatientID=ANON-*")) == 3
    assert len(findscu(scp, "-S", "QueryRetrieveLevel=STUDY", "PatientID=anon-*")) == 0
    assert len(findscu(scp, "-S", "QueryRetrieveLevel=STUDY", "PatientName=anon-*")) == 3
    assert len(findscu(scp, "-S", "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=MR")) == 1
    assert len(findscu(scp, "-S", "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=C*")) == 2
    assert len(findscu(scp, "-S", "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=?R")) == 1
    two = "\\".join(s[STUDY_UID] for s in january)
    assert len(findscu(scp, "-S", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={two}")) == 3
    # keys we keep nothing for come back, empty; the original identifiers are nowhere
    answers = findscu(
        scp, "-S", "QueryRetrieveLevel=STUDY", "AccessionNumber", "ReferringPhysicianName"
    )
    assert all(a["0008,0050"] == "" for a in answers)
    assert len(findscu(scp, "-S", "QueryRetrieveLevel=STUDY", "PatientID=QR001")) == 0
    assert len(findscu(scp, "-S", "QueryRetrieveLevel=STUDY", "AccessionNumber=ACC001")) == 3


def test_movescu_to_a_configured_node_and_unknown_destination(qr_scp) -> None:
    scp = qr_scp["scp"]
    study_uid = qr_scp["studies"][0][0]  # the two-series CT study: 5 instances
    result = retrieve_study("movescu", study_uid, scp.port, "-aem", "VIEWER")
    assert result.returncode == 0, result.stderr
    received = list(qr_scp["viewer"].iterdir())
    assert len(received) == 5
    assert {str(dcmread(p).StudyInstanceUID) for p in received} == {study_uid}

    peer = Peer(
        "us",
        RemoteNode(ae_title="DICOMFLOW", host="127.0.0.1", port=scp.port),
        "MOVER",
        ScuSettings(),
    )
    identifier = move_identifier("study", "STUDY", {"StudyInstanceUID": study_uid})
    outcome = move(peer, "study", identifier, "NOWHERE")
    assert outcome.status == 0xA801


def test_retrieves_must_name_what_they_want(qr_scp, tmp_path: Path) -> None:
    scp = qr_scp["scp"]
    out = tmp_path / "everything"
    out.mkdir()
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=*"]
    run_dcmtk(
        "getscu", "-S", "-aec", "DICOMFLOW", "-od", str(out), *keys, "127.0.0.1", str(scp.port)
    )
    assert list(out.iterdir()) == []  # no StudyInstanceUID: nothing, not the whole archive
    patient_level = run_dcmtk(
        "findscu",
        "-S",
        "-aec",
        "DICOMFLOW",
        "-k",
        "QueryRetrieveLevel=PATIENT",
        "-k",
        "PatientID",
        "127.0.0.1",
        str(scp.port),
    )
    assert "Find Response: 1 (Pending)" not in patient_level.stdout + patient_level.stderr
    peer = Peer(
        "us",
        RemoteNode(ae_title="DICOMFLOW", host="127.0.0.1", port=scp.port),
        "MOVER",
        ScuSettings(),
    )
    study_uid = qr_scp["studies"][0][0]
    identifier = move_identifier("study", "STUDY", {"StudyInstanceUID": study_uid})
    assert move(peer, "study", identifier, "DICOMFLOW").status == 0xA801  # not to ourselves


def test_getscu_retrieves_on_its_own_association(qr_scp, tmp_path: Path) -> None:
    scp = qr_scp["scp"]
    study_uid = qr_scp["studies"][2][0]  # the one-series CT study of the second patient
    out = tmp_path / "got"
    out.mkdir()
    result = retrieve_study("getscu", study_uid, scp.port, "-od", str(out))
    assert result.returncode == 0, result.stderr
    assert len(list(out.iterdir())) == 2


def rest(port: int, method: str, path: str, body: object | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read() or b"null")


def test_orthanc_queries_and_retrieves_from_us(archived, tmp_path, loopback_shim) -> None:
    settings: Settings = archived["settings"]
    # Orthanc must know us before it starts, and we must know Orthanc: a free port for us.
    our_port = free_port()
    with run_orthanc(
        tmp_path / "orthanc", loopback_shim, {"dicomflow": ("DICOMFLOW", our_port)}, http=True
    ) as orthanc:
        nodes = {"orthanc": RemoteNode(ae_title="ORTHANC", host="127.0.0.1", port=orthanc.port)}
        scp = start_receiver(
            ReceiverSettings(port=our_port),
            settings.landing,
            None,
            Archive(settings.catalog_store(), nodes),
        )
        try:
            http = orthanc.http_port
            assert http is not None
            query = rest(
                http,
                "POST",
                "/modalities/dicomflow/query",
                {"Level": "Study", "Query": {"PatientID": "ANON-*", "StudyDate": ""}},
            )
            answers = rest(http, "GET", f"/queries/{query['ID']}/answers?expand&simplify")
            assert len(answers) == 3
            assert all(a["PatientID"].startswith("ANON-") for a in answers)
            rest(
                http,
                "POST",
                f"/queries/{query['ID']}/retrieve",
                {"TargetAet": "ORTHANC", "Synchronous": True},
            )
            assert len(rest(http, "GET", "/instances")) == 9
        finally:
            scp.stop(grace_seconds=2)


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_matching_rules_become_safe_sql() -> None:
    query = build_query(identifier("STUDY", PatientID="AB_1%*", StudyDate="-20240131"))
    assert "p.patient_id LIKE ? ESCAPE" in query.sql and "st.study_date <= ?" in query.sql
    assert query.params == [dt.date(2024, 1, 31), "AB\\_1\\%%"]  # in tag order
    series = build_query(identifier("SERIES", SeriesInstanceUID="1.2\\1.3", Modality=""))
    assert "se.series_instance_uid IN (?, ?)" in series.sql and series.params == ["1.2", "1.3"]
    assert "Modality" in series.returned
    name = build_query(identifier("PATIENT", PatientName="anon-x"))
    assert "lower(p.patient_id) = lower(?)" in name.sql


@pytest.mark.parametrize(
    "bad",
    [
        identifier("FOO"),
        identifier("STUDY", StudyDate="2024-13-45"),
        identifier("STUDY", StudyDate="-"),
    ],
)
def test_bad_identifiers_are_refused(bad: Dataset) -> None:
    with pytest.raises(MatchError):
        build_query(bad)


def test_bulk_return_keys_are_left_out_of_answers() -> None:
    asked = identifier("SERIES", SeriesInstanceUID="")
    asked.PixelData = b""
    query = build_query(asked)
    answer = response(query, ["SeriesInstanceUID"], ["2.25.1"])
    assert answer.SeriesInstanceUID == "2.25.1" and "PixelData" not in answer


def test_retrieve_identifiers_need_their_unique_key() -> None:
    with pytest.raises(MatchError, match="needs StudyInstanceUID"):
        build_query(identifier("STUDY", PatientID="ANON-1"), with_paths=True)
    with pytest.raises(MatchError, match="without wildcards"):
        build_query(identifier("SERIES", SeriesInstanceUID="2.25.*"), with_paths=True)
    with pytest.raises(MatchError, match="Study Root"):
        build_query(identifier("PATIENT", PatientID="x"), study_root=True)
    assert build_query(identifier("STUDY", StudyInstanceUID="2.25.1"), with_paths=True).params
