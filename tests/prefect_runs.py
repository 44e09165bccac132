"""What a Prefect server holds about one flow run, read over its REST API as the UI does."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class RunRecord:
    """A flow run's name, parameters, task run names, logs and artifacts."""

    name: str
    parameters: dict[str, Any]
    task_runs: list[str]
    logs: list[dict[str, Any]]
    artifacts: list[dict[str, Any]]

    def artifact(self, key: str) -> dict[str, Any]:
        (found,) = [a for a in self.artifacts if a["key"] == key]
        return found

    def table(self, key: str) -> list[dict[str, Any]]:
        """The rows of a table artifact (the API returns them as JSON text)."""
        data = self.artifact(key)["data"]
        rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data
        return rows

    def texts(self) -> list[str]:
        """Every text of the run a person could read in the UI."""
        texts = [self.name, repr(self.parameters), *self.task_runs]
        texts += [log["message"] for log in self.logs]
        texts += [repr(a.get("data")) + (a.get("description") or "") for a in self.artifacts]
        return texts

    def leaks(self, originals: set[str]) -> list[tuple[str, str]]:
        """(original, text) pairs where a patient's name or ID shows in the run's texts."""
        return [(o, t[:120]) for t in self.texts() for o in originals if o.lower() in t.lower()]


def _post(api: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = httpx.post(f"{api}{path}", json=body, timeout=10)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return result


def _logs(api: str, run_id: str) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = []
    while True:
        page = _post(
            api,
            "/logs/filter",
            {
                "logs": {"flow_run_id": {"any_": [run_id]}},
                "sort": "TIMESTAMP_ASC",
                "limit": 200,
                "offset": len(logs),
            },
        )
        logs += page
        if len(page) < 200:
            return logs


def _finished(logs: list[dict[str, Any]]) -> bool:
    return any(
        log["name"] == "prefect.flow_runs" and log["message"].startswith("Finished in state")
        for log in logs
    )


def read_run(api: str, run_id: str, timeout: float = 20.0) -> RunRecord:
    """The run as the server has it, once its last log line has arrived (logs reach the
    server in the background, in order, after the run may have returned)."""
    deadline = time.monotonic() + timeout
    logs = _logs(api, run_id)
    while not _finished(logs):
        if time.monotonic() > deadline:
            raise AssertionError(f"the run's logs did not reach the server in {timeout} s")
        time.sleep(0.5)
        logs = _logs(api, run_id)
    run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
    tasks = _post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    artifacts = _post(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    return RunRecord(
        run["name"], run["parameters"], sorted(t["name"] for t in tasks), logs, artifacts
    )
