"""`dicomflow status`: is the receiver up, what waits in landing and quarantine, how
the last autoload went, and how big the catalog is; as a table or as JSON.

Each probe answers on its own and says "unknown" rather than fail, so the command
works on a half-configured machine too.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from flows.settings import Settings
from receiver.landing import LandingZone
from receiver.scu import Peer, ScuError, echo
from receiver.settings import RemoteNode, ScuSettings
from tasks.quarantine import entries


def receiver_state(settings: Settings) -> dict[str, Any]:
    """C-ECHO our own receiver (a real answer, unlike a port probe)."""
    receiver = settings.receiver
    host = "127.0.0.1" if receiver.host in ("0.0.0.0", "::", "") else receiver.host
    node = RemoteNode(ae_title=receiver.ae_title, host=host, port=max(receiver.port, 1))
    scu = ScuSettings(connection_timeout=2, acse_timeout=3, dimse_timeout=3, network_timeout=3)
    state: dict[str, Any] = {"address": f"{host}:{receiver.port}", "ae_title": receiver.ae_title}
    try:
        state["echo_ms"] = round(echo(Peer("receiver", node, "DICOMFLOW-STATUS", scu)), 1)
        state["listening"] = True
    except ScuError as exc:
        state.update(listening=False, problem=str(exc))
    return state


def landing_state(settings: Settings) -> dict[str, Any]:
    files = LandingZone(settings.landing).completed()
    sizes, oldest = 0, None
    for path in files:
        try:
            info = path.stat()
        except OSError:
            continue
        sizes += info.st_size
        oldest = info.st_mtime if oldest is None else min(oldest, info.st_mtime)
    return {
        "files": len(files),
        "bytes": sizes,
        "oldest": datetime.fromtimestamp(oldest, UTC).isoformat(timespec="seconds")
        if oldest
        else None,
        "oldest_age_seconds": round(time.time() - oldest) if oldest else None,
    }


def quarantine_state(settings: Settings) -> dict[str, Any]:
    found = entries(settings.quarantine)
    return {"files": len(found), "by_reason": dict(Counter(e.reason for e in found))}


def _api_url(settings: Settings) -> str | None:
    """The Prefect API in use: PREFECT_API_URL, else the one `serve` starts, if it is up."""
    from prefect.settings import PREFECT_API_URL

    configured = PREFECT_API_URL.value()
    if configured:
        return str(configured)
    local = f"http://127.0.0.1:{settings.autoload.prefect_port}/api"
    try:
        with urllib.request.urlopen(f"{local}/health", timeout=1) as answer:
            return local if answer.status == 200 else None
    except OSError:
        return None


def last_autoload(settings: Settings) -> dict[str, Any]:
    """The newest autoload run that started (not merely scheduled) on the Prefect API."""
    url = _api_url(settings)
    if url is None:
        return {"state": "unknown", "why": "no Prefect server (PREFECT_API_URL unset, none local)"}
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
            FlowRunFilter,
            FlowRunFilterStartTime,
        )
        from prefect.client.schemas.sorting import FlowRunSort
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["autoload"])),
                flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False)),
                sort=FlowRunSort.START_TIME_DESC,
                limit=1,
            )
    except Exception as exc:  # an unreachable server is an answer here, not an error
        return {"state": "unknown", "why": f"Prefect API unreachable: {type(exc).__name__}"}
    if not runs:
        return {"state": "none", "why": "no autoload run recorded"}
    run = runs[0]
    return {
        "name": run.name,
        "state": run.state_name,
        "started": run.start_time.isoformat(timespec="seconds") if run.start_time else None,
    }


def catalog_state(settings: Settings) -> dict[str, Any]:
    try:
        import catalog

        con = catalog.connect(settings.catalog_store())
        counts = con.execute(
            "SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM studies),"
            " (SELECT count(*) FROM series), (SELECT count(*) FROM instances),"
            " (SELECT coalesce(sum(file_size), 0) FROM instances)"
        ).fetchall()[0]
        con.close()
    except Exception as exc:
        return {"state": "unknown", "why": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    keys = ("patients", "studies", "series", "instances", "archived_bytes")
    return dict(zip(keys, (int(c) for c in counts), strict=True))


def status(settings: Settings) -> dict[str, Any]:
    return {
        "receiver": receiver_state(settings),
        "landing": landing_state(settings),
        "quarantine": quarantine_state(settings),
        "last_autoload": last_autoload(settings),
        "catalog": catalog_state(settings),
    }


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return "-" if value is None else str(value)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # our line says what failed
    report = status(settings)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("part", "item", "value", title=f"dicomflow status ({settings.data_dir})")
    for part, items in report.items():
        for key, value in items.items():
            table.add_row(part, key, _flat(value))
            part = ""
    Console().print(table)
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register status on the `dicomflow` parser."""
    parser = sub.add_parser(
        "status", parents=[common], help="receiver, landing backlog, quarantine, last run, catalog"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=cmd_status)
