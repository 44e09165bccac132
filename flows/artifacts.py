"""The table an autoload run shows in the Prefect UI, under one stable key.

One row per measure, one per quarantine reason, so a reason is a row to read
rather than a column to scroll to. Counts, sizes and times only: no patient data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flows.autoload import AutoloadSummary

AUTOLOAD_KEY = "autoload-summary"

Row = dict[str, str | int | float]


def autoload_rows(summary: AutoloadSummary) -> list[Row]:
    """The summary as `measure | value` rows, in the order an operator reads them."""
    pairs: list[tuple[str, int | float]] = [
        ("files landed", summary.landed),
        ("archived (new instances)", summary.archived),
        ("new versions", summary.versions),
        ("duplicates", summary.duplicates),
        ("quarantined", sum(summary.quarantined.values())),
    ]
    pairs += [(f"quarantined: {r}", n) for r, n in sorted(summary.quarantined.items())]
    pairs += [
        ("catalog instances recorded", summary.recorded),
        ("receipts recorded", summary.receipts),
        ("batches", summary.batches),
        ("bytes archived", summary.bytes),
        ("seconds", round(summary.seconds, 1)),
        ("files/s", round(summary.files_per_second, 1)),
        ("MB/s", round(summary.megabytes_per_second, 2)),
    ]
    return [{"measure": measure, "value": value} for measure, value in pairs]


def publish_autoload(summary: AutoloadSummary) -> None:
    """Create this run's table artifact; the key's latest is the last run's summary."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(
        key=AUTOLOAD_KEY,
        table=autoload_rows(summary),
        description="What this autoload run did: files, outcomes, quarantine reasons, speed.",
    )
