"""Only known peers get in: calling AE allowlist, DICOM TLS both ways, the audit log,
and files with no world access. Peers are dcmtk's tools over real loopback sockets."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from flows.settings import Settings
from receiver.access import access_policy
from receiver.landing import LandingZone
from receiver.scp import Receiver, ReceiverError, start_receiver
from receiver.scu import NodeUnreachable, Peer, ScuError, echo
from receiver.settings import NodeTls, ReceiverSettings, RemoteNode, ScuSettings, TlsSettings
from tests.conftest import free_port, run_dcmtk, wait_for_port
from tests.peers import run_storescp
from tests.tlsca import Identity, ScratchCA


def audit_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "dicomflow.audit"]


@pytest.fixture
def serve(settings: Settings) -> Iterator[object]:
    """Start receivers with the given settings; all are stopped after the test."""
    started: list[Receiver] = []

    def start(**fields: object) -> Receiver:
        scp = start_receiver(ReceiverSettings(port=0, **fields), settings.landing)
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop(grace_seconds=2)


# -- access control ---------------------------------------------------------------


def test_only_listed_callers_get_in(serve, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "dicomflow.audit")
    scp = serve(allowed_callers=["GOODSCU", "LOCALSCU@127.0.0.0/8", "FARSCU@10.20.0.0/16"])
    port = str(scp.port)
    for calling in ("GOODSCU", "LOCALSCU"):
        result = run_dcmtk("echoscu", "-aet", calling, "-aec", "DICOMFLOW", "127.0.0.1", port)
        assert result.returncode == 0, result.stderr
    for calling in ("STRANGER", "FARSCU"):
        result = run_dcmtk("echoscu", "-aet", calling, "-aec", "DICOMFLOW", "127.0.0.1", port)
        assert result.returncode != 0
        assert "Calling AE Title Not Recognized" in result.stderr + result.stdout
    events = audit_events(caplog)
    rejected = [e for e in events if e["event"] == "association-rejected"]
    assert [e["calling_ae"] for e in rejected] == ["STRANGER", "FARSCU"]
    assert "not allowed from 127.0.0.1" in str(rejected[1]["reason"])
    accepted = [e for e in events if e["event"] == "association-accepted"]
    assert [e["calling_ae"] for e in accepted] == ["GOODSCU", "LOCALSCU"]
    assert not scp.ae.active_associations or all(
        not a.is_established for a in scp.ae.active_associations
    )


def test_a_rejected_caller_stores_nothing(serve, settings: Settings) -> None:
    scp = serve(allowed_callers=["GOODSCU"])
    ct = get_testdata_file("CT_small.dcm")
    result = run_dcmtk(
        "storescu", "-aet", "STRANGER", "-aec", "DICOMFLOW", "127.0.0.1", str(scp.port), ct
    )
    assert result.returncode != 0
    assert LandingZone(settings.landing).completed() == []
    result = run_dcmtk(
        "storescu", "-aet", "GOODSCU", "-aec", "DICOMFLOW", "127.0.0.1", str(scp.port), ct
    )
    assert result.returncode == 0, result.stderr
    assert len(LandingZone(settings.landing).completed()) == 1


def test_wrong_called_ae_title_is_audited(serve, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "dicomflow.audit")
    scp = serve()
    result = run_dcmtk("echoscu", "-aec", "SOMEONEELSE", "127.0.0.1", str(scp.port))
    assert result.returncode != 0
    (event,) = [e for e in audit_events(caplog) if e["event"] == "association-rejected"]
    assert event["called_ae"] == "SOMEONEELSE"
    assert "Called AE" in str(event["reason"])


def test_secure_by_default_off_loopback() -> None:
    assert "loopback" in access_policy(ReceiverSettings()).summary
    with pytest.raises(Exception, match="no allowed callers"):
        access_policy(ReceiverSettings(host="0.0.0.0"))
    opened = access_policy(ReceiverSettings(host="0.0.0.0", allow_any_caller=True))
    assert opened.refusal("ANYONE", "192.0.2.7") is None
    listed = access_policy(ReceiverSettings(host="0.0.0.0", allowed_callers=["CT1@192.0.2.0/24"]))
    assert listed.refusal("CT1", "192.0.2.7") is None
    assert listed.refusal("CT1", "::ffff:192.0.2.8") is None
    assert listed.refusal("CT1", "198.51.100.1") is not None
    assert listed.refusal("MR1", "192.0.2.7") is not None


def test_receiver_refuses_to_start_open_to_the_network(settings: Settings) -> None:
    with pytest.raises(ReceiverError, match="allow_any_caller"):
        start_receiver(ReceiverSettings(host="0.0.0.0", port=0), settings.landing)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"allowed_callers": ["CT1@10.0.0.0/33"]}, "invalid network"),
        ({"allowed_callers": ["CT1@"]}, "invalid host"),
        ({"allowed_callers": ["CT 1 TOO LONG AE TITLE"]}, "invalid AE title"),
        ({"allowed_callers": ["CT1"], "allow_any_caller": True}, "contradict"),
        ({"tls": {"cert_file": "c", "key_file": "k", "require_client_cert": True}}, "ca_file"),
    ],
)
def test_bad_access_settings_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReceiverSettings(**fields)  # type: ignore[arg-type]


def test_allowed_callers_from_the_config_file(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "site.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "[receiver]\n"
        'allowed_callers = ["CT1@10.1.2.3", {ae_title = "MR1", host = "10.1.0.0/16"}]\n'
    )
    monkeypatch.delenv("DICOMFLOW_DATA_DIR", raising=False)
    from flows.settings import load_settings

    callers = load_settings(config).receiver.allowed_callers
    assert [(c.ae_title, c.host) for c in callers] == [("CT1", "10.1.2.3"), ("MR1", "10.1.0.0/16")]


# -- DICOM TLS --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pki")
    ca = ScratchCA(folder / "ca")
    other = ScratchCA(folder / "other", name="someone else CA")
    return {
        "ca": ca,
        "server": ca.issue("server", server=True),
        "client": ca.issue("client", server=False),
        "stranger": other.issue("stranger", server=False),
        "other_ca": other,
    }


def tls_echoscu(port: int, identity: Identity, ca: ScratchCA) -> subprocess.CompletedProcess[str]:
    return run_dcmtk(
        "echoscu",
        "-aec",
        "DICOMFLOW",
        "+tls",
        str(identity.key),
        str(identity.cert),
        "+cf",
        str(ca.ca_file),
        "127.0.0.1",
        str(port),
    )


def test_tls_receiver_serves_dcmtk(serve, pki, settings, caplog) -> None:
    caplog.set_level(logging.INFO, "dicomflow.audit")
    server: Identity = pki["server"]  # type: ignore[assignment]
    ca: ScratchCA = pki["ca"]  # type: ignore[assignment]
    scp = serve(
        tls=TlsSettings(
            cert_file=server.cert, key_file=server.key, ca_file=ca.ca_file, require_client_cert=True
        )
    )
    assert tls_echoscu(scp.port, pki["client"], ca).returncode == 0  # type: ignore[arg-type]
    client: Identity = pki["client"]  # type: ignore[assignment]
    stored = run_dcmtk(
        "storescu",
        "-aec",
        "DICOMFLOW",
        "+tls",
        str(client.key),
        str(client.cert),
        "+cf",
        str(ca.ca_file),
        "127.0.0.1",
        str(scp.port),
        get_testdata_file("CT_small.dcm"),
    )
    assert stored.returncode == 0, stored.stderr
    assert len(LandingZone(settings.landing).completed()) == 1
    accepted = [e for e in audit_events(caplog) if e["event"] == "association-accepted"]
    assert accepted and all(e.get("tls") is True for e in accepted)

    # A client whose certificate another CA signed, and a plain TCP client, get nothing.
    assert tls_echoscu(scp.port, pki["stranger"], ca).returncode != 0  # type: ignore[arg-type]
    plain = run_dcmtk("echoscu", "-to", "5", "-aec", "DICOMFLOW", "127.0.0.1", str(scp.port))
    assert plain.returncode != 0
    failures = [e for e in audit_events(caplog) if e["event"] == "tls-failed"]
    assert len(failures) == 2
    # ... and the receiver still serves the right client afterwards.
    assert tls_echoscu(scp.port, pki["client"], ca).returncode == 0  # type: ignore[arg-type]


def test_silent_tls_client_does_not_block_others(serve, pki) -> None:
    import socket

    server: Identity = pki["server"]  # type: ignore[assignment]
    scp = serve(tls=TlsSettings(cert_file=server.cert, key_file=server.key))
    with socket.create_connection(("127.0.0.1", scp.port)):  # connects, never says hello
        assert tls_echoscu(scp.port, pki["client"], pki["ca"]).returncode == 0  # type: ignore[arg-type]


def test_unusable_tls_files_stop_the_receiver_with_one_line(settings, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("hello")
    with pytest.raises(ReceiverError, match="no such file"):
        start_receiver(
            ReceiverSettings(port=0, tls=TlsSettings(cert_file=tmp_path / "x", key_file=bad)),
            settings.landing,
        )
    with pytest.raises(ReceiverError, match="cannot be loaded"):
        start_receiver(
            ReceiverSettings(port=0, tls=TlsSettings(cert_file=bad, key_file=bad)),
            settings.landing,
        )


@pytest.fixture
def tls_storescp(pki, tmp_path: Path, loopback_shim: Path) -> Iterator[int]:
    """dcmtk's storescp serving TLS on loopback, requiring a client certificate."""
    server: Identity = pki["server"]  # type: ignore[assignment]
    ca: ScratchCA = pki["ca"]  # type: ignore[assignment]
    tls = ("+tls", str(server.key), str(server.cert), "+cf", str(ca.ca_file))
    with run_storescp(tmp_path / "storescp", loopback_shim, "TLSSCP", *tls) as scp:
        yield scp.port


def tls_peer(port: int, tls: NodeTls) -> Peer:
    node = RemoteNode(ae_title="TLSSCP", host="127.0.0.1", port=port, tls=tls)
    return Peer("tlsscp", node, "DICOMFLOW", ScuSettings(connection_timeout=5, acse_timeout=5))


def test_our_scu_talks_tls_to_dcmtk(tls_storescp: int, pki) -> None:
    ca: ScratchCA = pki["ca"]  # type: ignore[assignment]
    client: Identity = pki["client"]  # type: ignore[assignment]
    good = NodeTls(ca_file=ca.ca_file, cert_file=client.cert, key_file=client.key)
    assert echo(tls_peer(tls_storescp, good)) > 0

    other: ScratchCA = pki["other_ca"]  # type: ignore[assignment]
    distrusted = NodeTls(ca_file=other.ca_file, cert_file=client.cert, key_file=client.key)
    with pytest.raises(NodeUnreachable, match=r"TLS handshake failed.*CERTIFICATE_VERIFY_FAILED"):
        echo(tls_peer(tls_storescp, distrusted))
    with pytest.raises(ScuError, match="no such file"):
        echo(tls_peer(tls_storescp, NodeTls(ca_file=ca.ca_file.with_name("missing.pem"))))


def test_our_scu_talks_tls_to_our_receiver(serve, pki) -> None:
    server: Identity = pki["server"]  # type: ignore[assignment]
    ca: ScratchCA = pki["ca"]  # type: ignore[assignment]
    scp = serve(ae_title="TLSSCP", tls=TlsSettings(cert_file=server.cert, key_file=server.key))
    assert echo(tls_peer(scp.port, NodeTls(ca_file=ca.ca_file))) > 0


# -- files we create ----------------------------------------------------------------


def test_received_files_and_logs_have_no_world_access(tmp_path: Path) -> None:
    """`dicomflow receive` under a permissive umask still writes private files."""
    data = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "DICOMFLOW_DATA_DIR": str(data), "DICOMFLOW_RECEIVER__PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "receive"],
        env=env,
        preexec_fn=lambda: os.umask(0),
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port)
        result = run_dcmtk(
            "storescu",
            "-aec",
            "DICOMFLOW",
            "127.0.0.1",
            str(port),
            get_testdata_file("CT_small.dcm"),
        )
        assert result.returncode == 0, result.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    written = [p for p in data.rglob("*")]
    assert any(p.suffix == ".dcm" for p in written)
    assert any(p.name == "audit.jsonl" for p in written)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, path
    audit = [json.loads(line) for line in (data / "logs" / "audit.jsonl").read_text().splitlines()]
    assert [e["event"] for e in audit] == ["receiver-started", "association-accepted"]
    assert audit[1]["calling_ae"] == "STORESCU" and audit[1]["peer"].startswith("127.0.0.1:")


def test_quarantines_are_audited_without_hand_dropped_names(tmp_path: Path, caplog) -> None:
    from receiver.landing import LandingZone
    from tasks.quarantine import quarantine

    caplog.set_level(logging.INFO, "dicomflow.audit")
    received = LandingZone(tmp_path / "landing").store(b"not dicom")
    dropped = tmp_path / "landing" / "Smith_John_CT.dcm"
    dropped.write_bytes(b"not dicom either")
    quarantine(received, tmp_path / "quarantine", "unreadable", "no DICM prefix")
    quarantine(dropped, tmp_path / "quarantine", "unreadable", "no DICM prefix")
    events = [e for e in audit_events(caplog) if e["event"] == "quarantined"]
    assert [e["reason"] for e in events] == ["unreadable", "unreadable"]
    assert events[0]["file"] == received.stem and "file" not in events[1]
    assert "Smith" not in caplog.text
