"""The Prefect UI, in a real browser, shows what an autoload run did.

A Prefect server of its own (not the session's harness), one `dicomflow autoload` in a
process of its own pointed at it, then headless Chromium reads the flow run's page and
its summary table, and compares the numbers with the summary the command printed.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.test_run_ui import land_samples

CHROMIUM = Path("/usr/bin/chromium")
BIN = Path(sys.executable).parent


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright; the test skips without either."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: the Prefect UI cannot be checked in a browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def prefect_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment without our or Prefect's settings from outside, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DICOMFLOW_"))}
    return {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    """`prefect server start` on a free loopback port; its API URL. Stopped by its
    process group, since the server runs its services in child processes."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = (tmp_path / "prefect-server.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=prefect_env(tmp_path / "prefect-home", PREFECT_UI_API_URL=api),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_health(api, server, tmp_path / "prefect-server.log")
        yield api
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=5)
        log.close()


def wait_for_health(api: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"prefect server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"prefect server not healthy after 60 s: {log.read_text()[-2000:]}")


def run_autoload(tmp_path: Path, api: str) -> dict[str, Any]:
    """`dicomflow autoload` against the server; the summary it printed, as values."""
    config = tmp_path / "site.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        '[anonymize]\nsalt = "ui-test"\n[autoload]\nbatch_size = 3\n'
    )
    done = subprocess.run(
        [str(BIN / "dicomflow"), "--config", str(config), "autoload"],
        env=prefect_env(tmp_path / "prefect-home", PREFECT_API_URL=api),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        summary[key] = printed_value(key, value)
    return summary


def printed_value(key: str, value: str) -> Any:
    """A summary line's value: counts by name (``1 empty-dataset, 1 not-dicom``) as a
    dict, numbers as numbers."""
    if key == "quarantined":
        pairs = (part.partition(" ") for part in value.split(", "))
        return {name: int(count) for count, _, name in pairs}
    return ast.literal_eval(value) if value[:1] in "0123456789" else value


def the_run(api: str) -> dict[str, Any]:
    (run,) = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
    return dict(run)


def test_flow_run_page_shows_the_autoload_summary(
    browser: Any, prefect_server: str, tmp_path: Path
) -> None:
    land_samples(tmp_path / "data" / "landing")
    summary = run_autoload(tmp_path, prefect_server)
    assert summary["landed"] == 7 and summary["duplicates"] == 1
    run = the_run(prefect_server)
    ui = prefect_server.removesuffix("/api")

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{ui}/runs/flow-run/{run['id']}")
    page.get_by_text("archive batch 3/3 · 1 file").first.wait_for(timeout=20_000)
    assert page.get_by_text(run["name"]).count() > 0
    assert run["name"].endswith(" · 7 files")
    shot = tmp_path / "flow-run.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"flow run page: {shot}")

    page.get_by_text("Artifacts", exact=True).click()
    page.get_by_role("link", name="autoload-summary").first.click()
    page.locator("td", has_text="files landed").wait_for(timeout=20_000)
    shown = {}
    for row in page.locator("tbody tr").all():
        measure, value = [cell.inner_text().strip() for cell in row.locator("td").all()]
        shown[measure] = value
    shot = tmp_path / "autoload-summary.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"artifact page: {shot}")

    expected = {
        "files landed": summary["landed"],
        "archived (new instances)": summary["archived"],
        "new versions": summary["versions"],
        "duplicates": summary["duplicates"],
        "quarantined": sum(summary["quarantined"].values()),
        "bytes archived": summary["bytes"],
        "batches": summary["batches"],
        **{f"quarantined: {r}": n for r, n in summary["quarantined"].items()},
    }
    assert {k: shown.get(k) for k in expected} == {k: str(v) for k, v in expected.items()}
    assert float(shown["seconds"]) == pytest.approx(summary["seconds"], abs=0.05)
    assert float(shown["files/s"]) == pytest.approx(7 / summary["seconds"], rel=0.05, abs=0.1)
