"""The DICOM PS3.15 Table E.1-1 Basic Profile, as data: which action for which attribute.

Loaded from ``tasks/rulesets/ps315_table_e1_1.json``, which
``tasks/rulesets/make_ps315_table.py`` generates from the standard's table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

TABLE_FILE = Path(__file__).with_name("rulesets") / "ps315_table_e1_1.json"

OPTIONS = (
    "retain-safe-private",
    "retain-uids",
    "retain-device-identity",
    "retain-institution-identity",
    "retain-patient-characteristics",
    "retain-long-full-dates",
    "retain-long-modified-dates",
    "clean-descriptors",
    "clean-structured-content",
    "clean-graphics",
)
"""The options of Table E.1-1, by the names its columns have in the source data."""


@dataclass(frozen=True)
class ProfileRow:
    """One row of Table E.1-1: what it matches, its Basic Profile action, option actions."""

    name: str
    match: str
    """``tag`` (one attribute), ``mask`` (a repeating group) or ``private`` (all of them)."""
    basic: str
    tag: int | None = None
    keyword: str = ""
    vr: str = ""
    mask: str = ""
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileTable:
    """The whole table with where it came from."""

    revision: str
    source: str
    rows: tuple[ProfileRow, ...]

    def by_keyword(self, keyword: str) -> ProfileRow:
        return next(r for r in self.rows if r.keyword == keyword)


def load_table(path: Path = TABLE_FILE) -> ProfileTable:
    """Read the generated table file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = tuple(
        ProfileRow(
            name=r["name"],
            match=r["match"],
            basic=r["basic"],
            tag=int(r["tag"], 16) if "tag" in r else None,
            keyword=r.get("keyword", ""),
            vr=r.get("vr", ""),
            mask=r.get("mask", ""),
            options=r.get("options", {}),
        )
        for r in data["rows"]
    )
    return ProfileTable(revision=data["revision"], source=data["source"], rows=rows)
