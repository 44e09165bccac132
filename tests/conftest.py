"""Shared fixtures: a real receiver on a free loopback port, dcmtk's environment, Prefect."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from flows.settings import Settings
from receiver.scp import Receiver, start_receiver
from receiver.settings import ReceiverSettings
from tasks.ingest import IngestContext

DCMTK_TOOLS = ("echoscu", "storescu", "findscu", "dcmsend")

# The Prefect servers tests start are offline: no usage reports.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def dcmtk_env() -> dict[str, str]:
    """Debian's dcmtk leaves Nagle's algorithm on unless TCP_NODELAY=1 is set."""
    return {**os.environ, "TCP_NODELAY": "1"}


def require_dcmtk() -> None:
    missing = [tool for tool in DCMTK_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"dcmtk tools missing ({', '.join(missing)}): run .ci/run to install dcmtk")


def run_dcmtk(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool with Nagle off; its exit status and output, never raising."""
    require_dcmtk()
    return subprocess.run(args, env=dcmtk_env(), capture_output=True, text=True, timeout=60)


def send_with_storescu(called_ae: str, port: int, *paths: str) -> int:
    """C-STORE `paths` to 127.0.0.1:`port` with dcmtk's storescu; its exit status."""
    require_dcmtk()
    command = ["storescu", "-aec", called_ae, "127.0.0.1", str(port), *paths]
    return subprocess.run(command, env=dcmtk_env(), timeout=60).returncode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Poll until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings rooted in a fresh folder, also visible to flows through the environment."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DICOMFLOW_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DICOMFLOW_ANONYMIZE__SALT", "test-salt")
    monkeypatch.setenv("DICOMFLOW_AUTOLOAD__BATCH_SIZE", "50")
    monkeypatch.delenv("DICOMFLOW_CONFIG", raising=False)
    return Settings()


@pytest.fixture
def receiver(settings: Settings) -> Iterator[Receiver]:
    """Our Storage SCP on a free loopback port, stopped after the test."""
    scp = start_receiver(ReceiverSettings(port=0, max_associations=4), settings.landing)
    try:
        yield scp
    finally:
        scp.stop(grace_seconds=2)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for the whole session (starting one takes seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def identifier_logging_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom as a fresh worker process has it, where no receiver has switched off
    its logging of query identifiers (patient data) yet."""
    from pynetdicom import _config

    monkeypatch.setattr(_config, "LOG_REQUEST_IDENTIFIERS", True)
    monkeypatch.setattr(_config, "LOG_RESPONSE_IDENTIFIERS", True)


@pytest.fixture(scope="session")
def loopback_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LD_PRELOAD library that keeps the peers we start bound to 127.0.0.1."""
    from tests.peers import PeerUnavailable, build_shim

    try:
        return build_shim(tmp_path_factory.mktemp("shim"))
    except PeerUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def pacs_site(tmp_path_factory: pytest.TempPathFactory, loopback_shim: Path) -> Iterator[Any]:
    """Orthanc and dcmqrscp on loopback, loaded with real studies (tests/peers.py)."""
    from tests.peers import PeerUnavailable, pacs_site

    try:
        with pacs_site(tmp_path_factory.mktemp("pacs"), loopback_shim) as site:
            yield site
    except PeerUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture
def pacs_receiver(pacs_site: Any, settings: Settings) -> Iterator[Receiver]:
    """Our receiver on the port the PACS peers know, landing under `settings`."""
    scp = start_receiver(
        ReceiverSettings(port=pacs_site.receiver_port), settings.landing, settings.move_ledger()
    )
    try:
        yield scp
    finally:
        scp.stop(grace_seconds=2)


@pytest.fixture
def ctx(tmp_path: Path) -> IngestContext:
    """What one autoload batch needs, with every folder under a fresh data root."""
    root = tmp_path / "data"
    return IngestContext(
        archive_dir=root / "archive",
        quarantine_dir=root / "quarantine",
        catalog_dir=root / "catalog",
        salt=b"test-salt",
        run_id="run-1",
    )


def prefect_events(
    prefix: str, since: datetime, wanted: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Events named `prefix`* that occurred after `since`, once the server holds `wanted`."""
    from prefect.client.orchestration import get_client

    query = {
        "filter": {"event": {"prefix": [prefix]}, "occurred": {"since": since.isoformat()}},
        "limit": 50,
    }
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            events = client._client.post("/events/filter", json=query).json()["events"]
        if len(events) >= wanted:
            break
        time.sleep(0.5)
    return events
