"""Names the Prefect UI shows for our runs, and the artifact keys it accepts.

A run list reads like a log: `autoload 2026-12-03 14:05 · 412 files`. The counts are
known only once the run has listed its work, so the run starts under a plain name
and is renamed then. Names carry times, job ids and counts, never patient data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from prefect import Task

P = ParamSpec("P")
R = TypeVar("R")


def stamp(when: datetime) -> str:
    """Minutes in UTC: what the run list needs to tell runs apart, and no more."""
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M}"


def counted(count: int, noun: str) -> str:
    """`1 file`, `412 files`, `2 studies`: the nouns we count have regular plurals."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def autoload_name(started: datetime, files: int | None = None, skipped: bool = False) -> str:
    """`autoload 2026-12-03 14:05 · 412 files`, or `· skipped` when another run held the lock."""
    base = f"autoload {stamp(started)}"
    if skipped:
        return f"{base} · skipped"
    return base if files is None else f"{base} · {counted(files, 'file')}"


def retrieve_name(job_id: str, started: datetime, count: int, noun: str = "study") -> str:
    """`retrieve job-1a2b3c4d5e6f 2026-12-03 14:05 · 12 studies` (or `· 12 rows` before the
    C-FINDs have said how many studies the rows match)."""
    return f"retrieve {job_id} {stamp(started)} · {counted(count, noun)}"


def batch_name(step: str, number: int, of: int, files: int) -> str:
    """`archive batch 3/7 · 500 files`: where the run stands, at a glance."""
    return f"{step} batch {number}/{of} · {counted(files, 'file')}"


def artifact_key(*parts: str) -> str:
    """A stable artifact key; Prefect allows only lowercase letters, digits and dashes."""
    return "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts if p)


def named_for_batch(step: Task[P, R], number: int, of: int, files: int) -> Task[P, R]:
    """`step` (a Prefect task) with its next run named by `batch_name`."""
    name = batch_name(step.name, number, of, files)
    # Prefect formats a task run name with the call's parameters: escape any braces.
    return step.with_options(task_run_name=name.replace("{", "{{").replace("}", "}}"))


def run_start(flow_run_id: Any) -> datetime:
    """When the flow run started, as the server recorded it (its expected start before)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    return run.start_time or run.expected_start_time or datetime.now(UTC)


def rename_run(make_name: Callable[[datetime], str]) -> str | None:
    """Rename the current flow run to `make_name(its start time)`; the new name, or None
    outside a flow run. A failed rename leaves the old name and is logged, never raised:
    the work matters more than its label."""
    import logging

    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id:
        return None
    try:
        name = make_name(run_start(run_id))
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, name=name)
    except Exception as exc:
        logging.getLogger("dicomflow.flows").warning("could not rename the flow run: %s", exc)
        return None
    return name
