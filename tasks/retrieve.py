"""Prefect tasks around `tasks.pull`: one task run per job row, per check, per re-request.

A job row is one C-FIND and (mostly) one C-MOVE of a whole study, seconds of work
for the PACS, so a task each is what lets the UI show where a bulk job stands.
Only transient failures (busy node, lost association, timeout) are retried.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from tasks import pull
from tasks.retrieval import StudyOutcome, StudyRequest


def transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry what may work later; a refused request or a missing study never will."""
    try:
        state.result()
    except pull.TransientFailure:
        return True
    except Exception:
        return False
    return False


@task(
    name="pull",
    task_run_name="pull row {request.row}",
    cache_policy=NO_CACHE,
    retry_condition_fn=transient,
)
def pull_request(ctx: pull.PullContext, request: StudyRequest) -> list[StudyOutcome]:
    """Find the studies of one job row and move what the archive lacks."""
    return pull.pull_request(ctx, request)


@task(name="check", task_run_name="check round {round_no}", cache_policy=NO_CACHE)
def check_all(
    ctx: pull.PullContext, outcomes: list[StudyOutcome], round_no: int
) -> list[StudyOutcome]:
    """Compare every moved study with what the archive holds now."""
    return [pull.check(ctx, o) if o.state == "pending" else o for o in outcomes]


@task(
    name="re-request",
    task_run_name="re-request row {outcome.row} round {round_no}",
    cache_policy=NO_CACHE,
    retry_condition_fn=transient,
)
def rerequest(ctx: pull.PullContext, outcome: StudyOutcome, round_no: int) -> StudyOutcome:
    """Move the missing series (round 1) or the missing images (later rounds) again."""
    return pull.rerequest(ctx, outcome, round_no)
