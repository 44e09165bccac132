"""The catalog-compact flow: merge the catalog's small Parquet parts, on a schedule."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from catalog.compact import CompactionResult
from flows.settings import Settings, load_settings
from receiver.durable import restrict_new_files
from tasks.autoload import compact_catalog


def run_name() -> str:
    return f"compact {datetime.now(UTC):%Y-%m-%d %H:%M:%S}"


@flow(name="catalog-compact", flow_run_name=run_name, log_prints=False)
def catalog_compact(config_file: str | None = None) -> CompactionResult:
    """Merge each partition's small parts into one, while readers and autoload go on.

    `config_file` is the TOML settings file (else ``DICOMFLOW_CONFIG`` and the
    environment). A compaction already running makes this one fail at once.
    """
    settings = load_settings(config_file)
    restrict_new_files()
    return run_compaction(settings)


def run_compaction(settings: Settings) -> CompactionResult:
    """The body of `catalog_compact`, for callers that already hold settings."""
    result = compact_catalog(
        settings.catalog_location,
        dict(settings.catalog.storage_options),
        settings.catalog_lock,
        settings.catalog.keep_replaced_seconds,
    )
    get_run_logger().info(
        "merged %d parts into %d, deleted %d old files in %.1f s",
        result.merged,
        result.written,
        result.deleted,
        result.seconds,
    )
    row = {k: v for k, v in asdict(result).items() if k != "partitions"}
    create_table_artifact(
        key="catalog-compact", table=[row], description="Parts merged by this compaction."
    )
    return result
