"""Prefect events for what autoload archived, so users can hang automations on them.

One ``dicomflow.study.archived`` event per study a batch touched, with anonymized
UIDs and counts only, one ``dicomflow.batch.archived`` per batch, and one
``dicomflow.study.retrieved`` per study a retrieval job moved. Emitting is
best effort: a Prefect without an events backend must not fail the batch.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from tasks.ingest import ArchiveOutcome
from tasks.retrieval import StudyOutcome

LOGGER = logging.getLogger("dicomflow.autoload")

STUDY_ARCHIVED = "dicomflow.study.archived"
BATCH_ARCHIVED = "dicomflow.batch.archived"
STUDY_RETRIEVED = "dicomflow.study.retrieved"


def studies_of(outcome: ArchiveOutcome) -> list[dict[str, Any]]:
    """Per study of the batch: its anonymized UID, patient pseudonym and counts."""
    grouped: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"series": set(), "instances": 0, "new": 0, "bytes": 0}
    )
    for archived in outcome.archived:
        row = archived.rows["instances"]
        study = grouped[str(row["study_instance_uid"])]
        study["patient_id"] = row["patient_id"]
        study["series"].add(row["series_instance_uid"])
        study["instances"] += 1
        study["new"] += 1 if archived.kind != "duplicate" else 0
        study["bytes"] += int(row.get("file_size") or 0) if archived.new else 0
    return [
        {
            "study_instance_uid": uid,
            "patient_id": facts["patient_id"],
            "series": len(facts["series"]),
            "instances": facts["instances"],
            "new_instances": facts["new"],
            "bytes": facts["bytes"],
        }
        for uid, facts in sorted(grouped.items())
    ]


def emit_archived(outcome: ArchiveOutcome, run_id: str, batch_no: int) -> int:
    """Emit the batch's events; how many were accepted for sending."""
    from prefect.events import emit_event

    sent = 0
    try:
        for study in studies_of(outcome):
            uid = study["study_instance_uid"]
            event = emit_event(
                event=STUDY_ARCHIVED,
                resource={"prefect.resource.id": f"dicomflow.study.{uid}"},
                related=[
                    {
                        "prefect.resource.id": f"dicomflow.patient.{study['patient_id']}",
                        "prefect.resource.role": "patient",
                    }
                ],
                payload={**study, "run_id": run_id, "batch": batch_no},
            )
            sent += event is not None
        batch = emit_event(
            event=BATCH_ARCHIVED,
            resource={"prefect.resource.id": f"dicomflow.autoload.{run_id}.{batch_no}"},
            payload={
                "run_id": run_id,
                "batch": batch_no,
                "new": outcome.new,
                "duplicates": outcome.duplicates,
                "quarantined": dict(outcome.quarantined),
            },
        )
        sent += batch is not None
    except Exception as exc:  # events are a convenience, never a reason to fail a batch
        LOGGER.warning("could not emit Prefect events: %s", exc)
    return sent


def emit_retrieved(outcomes: list[StudyOutcome], node: str) -> int:
    """One ``dicomflow.study.retrieved`` per study of a retrieval job, with its state and
    counts and the study's archive UID (never the PACS's original identifiers)."""
    from prefect.events import emit_event

    sent = 0
    try:
        for outcome in outcomes:
            if outcome.study_uid is None:
                continue  # a request that matched no study: nothing was retrieved
            resource = f"dicomflow.retrieve.{outcome.job_id}.{outcome.row}"
            payload = {**outcome.public(), "job_id": outcome.job_id, "node": node}
            event = emit_event(
                event=STUDY_RETRIEVED,
                resource={"prefect.resource.id": resource},
                related=[
                    {
                        "prefect.resource.id": f"dicomflow.study.{outcome.archived_study_uid}",
                        "prefect.resource.role": "study",
                    }
                ]
                if outcome.archived_study_uid
                else None,
                payload=payload,
            )
            sent += event is not None
    except Exception as exc:
        LOGGER.warning("could not emit Prefect events: %s", exc)
    return sent
