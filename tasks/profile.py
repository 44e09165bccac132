"""The DICOM PS3.15 Annex E profile as data: which action for which attribute, per option.

Table E.1-1 is loaded from ``tasks/rulesets/ps315_table_e1_1.json``, which
``tasks/rulesets/make_ps315_table.py`` generates from the standard's table; Table
E.3.10-1 (safe private attributes) from ``tasks/rulesets/ps315_safe_private.json``.
`profile_rules` turns the table and a choice of options into one `Rule` per attribute.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tasks.rules import Action, PrivateKey, Rule

RULESETS = Path(__file__).with_name("rulesets")
TABLE_FILE = RULESETS / "ps315_table_e1_1.json"
SAFE_PRIVATE_FILE = RULESETS / "ps315_safe_private.json"

OPTIONS = {
    "retain-safe-private": ("113111", "Retain Safe Private Option"),
    "retain-uids": ("113110", "Retain UIDs Option"),
    "retain-device-identity": ("113109", "Retain Device Identity Option"),
    "retain-institution-identity": ("113112", "Retain Institution Identity Option"),
    "retain-patient-characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain-long-full-dates": (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    "retain-long-modified-dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "clean-descriptors": ("113105", "Clean Descriptors Option"),
    "clean-structured-content": ("113104", "Clean Structured Content Option"),
    "clean-graphics": ("113103", "Clean Graphics Option"),
}
"""The options of Table E.1-1, by the names its columns have in the source data, with
their codes and meanings in CID 7050 (De-identification Method), coding scheme DCM."""

BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")

EXCLUSIVE_OPTIONS = frozenset({"retain-long-full-dates", "retain-long-modified-dates"})

CHOICES = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}
"""Where the table leaves the choice to the IOD, we take the one that is valid for any
type of attribute (a value where Type 1 needs one), and is no less protective."""

CODES = {
    "X": Action.REMOVE,
    "Z": Action.EMPTY,
    "D": Action.DUMMY,
    "K": Action.KEEP,
    "C": Action.CLEAN,
    "U": Action.UID,
}


class ProfileError(ValueError):
    """An option list that cannot be applied."""


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

    def code(self, options: frozenset[str]) -> str:
        """The action letter for this row with `options` applied: K wins over C."""
        chosen = {self.options[o] for o in options if o in self.options}
        for letter in ("K", "C"):
            if letter in chosen:
                return letter
        return CHOICES.get(self.basic, self.basic)


@dataclass(frozen=True)
class ProfileTable:
    """The whole table with where it came from."""

    revision: str
    source: str
    rows: tuple[ProfileRow, ...]

    def by_keyword(self, keyword: str) -> ProfileRow:
        return next(r for r in self.rows if r.keyword == keyword)


@dataclass(frozen=True)
class MaskRule:
    """A rule for a repeating group such as ``60xx3000`` (x: any hex digit)."""

    mask: str
    rule: Rule

    def matches(self, tag: int) -> bool:
        return all(m in "xX" or m == t for m, t in zip(self.mask, f"{tag:08x}", strict=True))


@dataclass(frozen=True)
class ProfileRules:
    """Table E.1-1 with chosen options, as rules."""

    by_tag: dict[int, Rule]
    masks: tuple[MaskRule, ...]
    private: Rule
    safe_private: dict[PrivateKey, str]


def check_options(options: Iterable[str]) -> frozenset[str]:
    """The options as a set; unknown names and the two date options together fail."""
    options = list(options)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ProfileError(f"unknown option {unknown[0]!r} (one of: {', '.join(OPTIONS)})")
    chosen = frozenset(options)
    if chosen >= EXCLUSIVE_OPTIONS:
        raise ProfileError("choose one of retain-long-full-dates and retain-long-modified-dates")
    return chosen


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


def load_safe_private(path: Path = SAFE_PRIVATE_FILE) -> dict[PrivateKey, str]:
    """Table E.3.10-1: (creator, group, element low byte) -> the VR it gives ("" for none).

    The VR matters: an implicit VR file carries none, and these are the elements we keep.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    return {
        (r["creator"], int(r["group"], 16), int(r["element"][2:], 16)): r["vr"]
        for r in data["rows"]
    }


def _action(row: ProfileRow, letter: str, options: frozenset[str]) -> Action:
    if letter == "C" and "retain-long-modified-dates" in options:
        if row.vr in ("DA", "DT"):
            return Action.SHIFT_DATE
        if row.vr == "TM":
            return Action.KEEP  # a time of day says nothing once the date has moved
    return CODES[letter]


def profile_rules(table: ProfileTable, options: frozenset[str]) -> ProfileRules:
    """One rule per attribute of the table, with `options` (see `check_options`) applied."""
    by_tag: dict[int, Rule] = {}
    masks: list[MaskRule] = []
    private = Rule(Action.REMOVE, "PS3.15 E.1-1")
    for row in table.rows:
        letter = row.code(options)
        rule = Rule(_action(row, letter, options), f"PS3.15 E.1-1 {letter} ({row.basic})")
        if row.match == "tag" and row.tag is not None:
            by_tag[row.tag] = rule
        elif row.match == "mask":
            masks.append(MaskRule(row.mask, rule))
        else:
            private = rule
    safe = load_safe_private() if private.action is Action.CLEAN else {}
    return ProfileRules(by_tag, tuple(masks), private, safe)
