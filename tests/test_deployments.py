"""prefect.yaml deploys as written: `prefect deploy --all` against a real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def deployment(prefect_harness) -> Any:
    """`prefect deploy --all` once against the session's server; then look deployments up."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    pool = prefect("work-pool", "create", "dicomflow", "--type", "process", "--overwrite", env=env)
    assert pool.returncode == 0, pool.stderr[-2000:]
    pool = prefect(
        "work-pool", "create", "dicomflow-process", "--type", "process", "--overwrite", env=env
    )
    assert pool.returncode == 0, pool.stderr[-2000:]
    deploy = prefect("deploy", "--all", env=env)
    assert deploy.returncode == 0, (deploy.stdout + deploy.stderr)[-3000:]

    def read(name: str) -> Any:
        with get_client(sync_client=True) as client:
            return client.read_deployment_by_name(name)

    return read


def test_prefect_yaml_deploys_autoload_on_an_interval(deployment) -> None:
    scheduled = deployment("autoload/autoload")
    manual = deployment("autoload/autoload-manual")
    assert scheduled.entrypoint == "flows/autoload.py:autoload"
    # deployed from the project folder: the worker runs the flow from there
    (step,) = scheduled.pull_steps
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == str(ROOT)
    assert [s.schedule.interval for s in scheduled.schedules] == [timedelta(seconds=60)]
    assert manual.schedules == []
    assert scheduled.global_concurrency_limit.limit == 1
    assert "config_file" in scheduled.parameter_openapi_schema["properties"]


def test_prefect_yaml_deploys_autoload_for_workers_on_several_machines(deployment) -> None:
    shared = deployment("autoload/autoload-shared")
    assert shared.work_pool_name == "dicomflow-process"
    assert shared.entrypoint == "flows/autoload.py:autoload"
    assert shared.global_concurrency_limit.limit == 1
    assert [s.active for s in shared.schedules] == [False]


def test_prefect_yaml_deploys_catalog_compaction_hourly(deployment) -> None:
    compaction = deployment("catalog-compact/catalog-compact")
    assert compaction.entrypoint == "flows/compact.py:catalog_compact"
    assert [s.schedule.interval for s in compaction.schedules] == [timedelta(seconds=3600)]
    assert compaction.global_concurrency_limit.limit == 1


def test_prefect_yaml_deploys_retrieve_with_a_form(deployment) -> None:
    retrieve = deployment("retrieve/retrieve")
    assert retrieve.entrypoint == "flows/retrieve.py:retrieve"
    schema = retrieve.parameter_openapi_schema
    assert {"node", "job_file", "sql", "job_id"} <= set(schema["properties"])
    assert schema["required"] == ["node"]
    assert retrieve.enforce_parameter_schema and retrieve.parameters == {"node": "pacs"}
    (schedule,) = retrieve.schedules
    assert schedule.schedule.cron == "0 20 * * *" and not schedule.active


def test_prefect_yaml_deploys_send_with_a_form(deployment) -> None:
    send = deployment("send/send")
    assert send.entrypoint == "flows/send.py:send_flow"
    schema = send.parameter_openapi_schema
    assert {"node", "study", "series", "sql", "batch_size"} <= set(schema["properties"])
    assert schema["required"] == ["node"] and send.enforce_parameter_schema
    assert send.schedules == []


def test_deployments_explain_themselves_with_typed_forms(deployment) -> None:
    """Each deployment has a description and tags; the retrieve form has typed, described
    fields that the server enforces."""
    names = ["autoload/autoload", "autoload/autoload-manual", "retrieve/retrieve", "send/send"]
    for name in [*names, "catalog-compact/catalog-compact"]:
        found = deployment(name)
        assert found.description and "dicomflow" in found.tags, name
        assert found.enforce_parameter_schema, name
    properties = deployment("retrieve/retrieve").parameter_openapi_schema["properties"]
    assert properties["node"]["type"] == "string"
    for optional in ("job_file", "sql", "job_id", "destination", "config_file"):
        kinds = [choice["type"] for choice in properties[optional]["anyOf"]]
        assert kinds == ["string", "null"], optional
    assert all(field.get("description") for field in properties.values()), properties
    autoload = deployment("autoload/autoload").parameter_openapi_schema["properties"]
    assert autoload["wait_for_lock_seconds"]["type"] == "number"
    assert autoload["wait_for_lock_seconds"]["description"]
