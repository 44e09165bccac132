"""Autoload emits Prefect events per archived study and per batch, without patient data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from flows.settings import Settings
from tests.conftest import prefect_events
from tests.faults import land_and_autoload, make_instances


def test_autoload_emits_one_event_per_study_and_batch(
    prefect_harness, settings: Settings, tmp_path: Path
) -> None:
    since = datetime.now(UTC)
    first = make_instances(tmp_path / "a", 3, side=16)
    second = make_instances(tmp_path / "b", 2, side=16)  # another series of the same study
    assert land_and_autoload(settings, first + second) == 5
    events = prefect_events("dicomflow.", since, wanted=2)
    studies = [e for e in events if e["event"] == "dicomflow.study.archived"]
    batches = [e for e in events if e["event"] == "dicomflow.batch.archived"]
    assert len(studies) == 1 and len(batches) == 1
    payload = studies[0]["payload"]
    assert payload["instances"] == 5 and payload["series"] == 2 and payload["new_instances"] == 5
    assert payload["study_instance_uid"].startswith("2.25.")
    assert payload["patient_id"].startswith("ANON-")
    assert studies[0]["resource"]["prefect.resource.id"].endswith(payload["study_instance_uid"])
    assert batches[0]["payload"]["new"] == 5
