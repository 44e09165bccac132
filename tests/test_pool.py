"""Several receiver processes on one port: parallel senders spread over them, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydicom import dcmread

from flows.settings import Settings
from receiver.landing import LandingZone
from tests.conftest import dcmtk_env, free_port, require_dcmtk, wait_for_port
from tests.faults import make_instances


def test_four_senders_into_two_receiver_processes(settings: Settings, tmp_path: Path) -> None:
    require_dcmtk()
    corpora = [make_instances(tmp_path / f"sender{n}", 25, side=32) for n in range(4)]
    port = free_port()
    env = {
        **os.environ,
        "DICOMFLOW_RECEIVER__PORT": str(port),
        "DICOMFLOW_RECEIVER__PROCESSES": "2",
    }
    receive = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "receive"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port)
        time.sleep(1.0)  # the second process joins the port after the first
        senders = [
            subprocess.Popen(
                ["storescu", "-aec", "DICOMFLOW", "127.0.0.1", str(port), *map(str, corpus)],
                env=dcmtk_env(),
            )
            for corpus in corpora
        ]
        assert [s.wait(timeout=120) for s in senders] == [0, 0, 0, 0]
        for _ in range(16):  # with 20 associations, one process taking all is 1 in 2**19
            echo = ["echoscu", "-aec", "DICOMFLOW", "127.0.0.1", str(port)]
            assert subprocess.run(echo, env=dcmtk_env(), timeout=30).returncode == 0
    finally:
        receive.send_signal(signal.SIGINT)
        out, err = receive.communicate(timeout=60)
    assert "stopped: 100 stored, 0 refused" in out, err[-2000:]
    landed = LandingZone(settings.landing).completed()
    sent = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for c in corpora for p in c}
    assert {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in landed} == sent
    receipts = settings.data_dir / "logs" / "receipts.jsonl"
    lines = [json.loads(line) for line in receipts.read_text().splitlines()]
    assert len(lines) == 100
    audit_log = receipts.parent / "audit.jsonl"
    audit = [json.loads(line) for line in audit_log.read_text().splitlines()]
    accepted = [line for line in audit if line["event"] == "association-accepted"]
    assert len(accepted) == 20
    assert len({line["process"] for line in accepted}) == 2, "both processes took associations"
