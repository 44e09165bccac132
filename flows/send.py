"""The send flow: push archived instances to a remote node, from the UI or a schedule.

The same selection and sending as `dicomflow send` (`catalog.selection`,
`receiver.send`), one task run per association batch, and a table artifact with
the outcome. The selection may be a study, a series, or any catalog query.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from catalog.selection import SelectionError, select_archived
from catalog.store import CatalogStore
from flows import naming
from flows.settings import load_settings
from receiver.durable import restrict_new_files
from receiver.scu import Peer, ScuError, peer_for
from receiver.send import Sent, send


@task(name="select archived", cache_policy=NO_CACHE)
def select_paths(
    location: CatalogStore | Path | str,
    archive: Path,
    study: str | None,
    series: str | None,
    sql: str | None,
) -> list[Path]:
    """The archived files to send, as the catalog has them now (archive paths only)."""
    chosen = select_archived(location, archive=archive, study=study, series=series, sql=sql)
    return [s.path for s in chosen]


@task(name="send batch", task_run_name="send batch {batch_no}", cache_policy=NO_CACHE)
def send_paths(peer: Peer, paths: list[Path], batch_no: int) -> list[Sent]:
    """One association's worth of C-STOREs, failures tried once more."""
    return send(peer, paths, batch_size=len(paths)).results


def artifact_key(node: str) -> str:
    """A stable artifact key per node (Prefect allows lowercase letters, digits, dashes)."""
    return naming.artifact_key("send", node)


def send_run_name() -> str:
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    what = "study" if parameters.get("study") else "series" if parameters.get("series") else "query"
    return f"send {what} to {parameters.get('node')}"


@flow(name="send", flow_run_name=send_run_name, log_prints=False)
def send_flow(
    node: str,
    study: str | None = None,
    series: str | None = None,
    sql: str | None = None,
    batch_size: int = 500,
    config_file: str | None = None,
) -> dict[str, int]:
    """C-STORE the archived instances of `study`, `series`, or a catalog `sql` query
    (returning archive_path) to `node`, a [nodes.NAME] of the settings.

    Fails, after publishing its outcome table, when any instance was not sent.
    """
    logger = get_run_logger()
    settings = load_settings(config_file)
    restrict_new_files()
    try:
        peer = peer_for(node, settings.nodes, settings.receiver.ae_title, settings.scu)
        paths = select_paths(settings.catalog_store(), settings.archive, study, series, sql)
    except (ScuError, SelectionError) as exc:
        raise ValueError(str(exc)) from None
    results: list[Sent] = []
    for batch_no, start in enumerate(range(0, len(paths), max(batch_size, 1)), 1):
        results += send_paths(peer, paths[start : start + batch_size], batch_no)
    counts = Counter(r.category for r in results)
    failed = [r for r in results if r.category not in ("Success", "Warning")]
    table: list[dict[str, object]] = [
        {"outcome": "sent", "instances": counts["Success"]},
        {"outcome": "warning", "instances": counts["Warning"]},
        {"outcome": "failed", "instances": len(failed)},
    ]
    table += [{"outcome": f"failed: {r.path.stem}", "instances": r.describe()} for r in failed]
    create_table_artifact(
        key=artifact_key(node),
        table=table,
        description=f"Instances sent to {node}",
    )
    logger.info(
        "sent %d, warnings %d, failed %d", counts["Success"], counts["Warning"], len(failed)
    )
    if failed:
        raise RuntimeError(f"{len(failed)} instance(s) not sent to {node}: see the artifact")
    return {"sent": counts["Success"], "warnings": counts["Warning"], "failed": len(failed)}
