"""A run's summary as `key: value` lines on the command line; counts by name in words."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


def counts_text(counts: dict[str, int]) -> str:
    """``{'phi-gate': 5, 'missing-uid': 4}`` as ``4 missing-uid, 5 phi-gate``."""
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))


def summary_lines(summary: Any) -> list[str]:
    """Each field of the dataclass `summary` that has a value, as an aligned line."""
    return [
        f"{key:>12}: {counts_text(value) if isinstance(value, dict) else value}"
        for key, value in asdict(summary).items()
        if value not in (None, {}, "")
    ]
