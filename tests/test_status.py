"""`dicomflow status` reports the receiver, landing, quarantine, last run and catalog."""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.data import get_testdata_file

from flows.cli import main
from flows.settings import Settings
from flows.status import status
from receiver.landing import LandingZone
from receiver.scp import start_receiver
from receiver.settings import ReceiverSettings
from tasks.quarantine import quarantine
from tests.faults import land_and_autoload, make_instances


def test_status_reports_each_part(prefect_harness, settings, tmp_path: Path, monkeypatch) -> None:
    assert land_and_autoload(settings, make_instances(tmp_path / "ct", 3, side=16)) == 3
    zone = LandingZone(settings.landing)
    waiting = zone.store(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    quarantine(zone.store(b"junk"), settings.quarantine, "unreadable", "not DICOM")
    scp = start_receiver(ReceiverSettings(port=0), settings.landing)
    try:
        monkeypatch.setenv("DICOMFLOW_RECEIVER__PORT", str(scp.port))
        report = status(Settings())
    finally:
        scp.stop(grace_seconds=2)
    assert report["receiver"]["listening"] is True
    assert report["landing"]["files"] == 1
    assert report["landing"]["bytes"] == waiting.stat().st_size
    assert report["quarantine"] == {"files": 1, "by_reason": {"unreadable": 1}}
    assert report["last_autoload"]["state"] == "Completed"
    assert report["catalog"]["instances"] == 3 and report["catalog"]["archived_bytes"] > 0


def test_status_json_when_nothing_runs(settings, capsys, monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("DICOMFLOW_RECEIVER__PORT", "9")  # nothing listens on discard
    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["receiver"]["listening"] is False
    assert "refused" in report["receiver"]["problem"]
    assert report["landing"]["files"] == 0 and report["quarantine"]["files"] == 0
