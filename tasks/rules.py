"""Anonymization rules as data: load, validate and look up per attribute."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydicom.datadict import tag_for_keyword

BUILTIN_RULES = Path(__file__).with_name("rulesets") / "basic.toml"


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the entry."""


class Action(StrEnum):
    """What happens to one attribute."""

    KEEP = "keep"
    REMOVE = "remove"
    EMPTY = "empty"
    UID = "uid"
    NEW_UID = "new-uid"
    PSEUDONYM = "pseudonym"
    PATIENT_PSEUDONYM = "patient-pseudonym"


@dataclass(frozen=True)
class Rules:
    """A validated rule set: actions by tag and by VR."""

    name: str
    remove_private: bool
    remove_unknown: bool
    by_tag: dict[int, Action]
    by_vr: dict[str, Action]

    def action_for(self, tag: int, vr: str) -> Action:
        """The action for one element: its keyword's rule, else its VR's, else keep."""
        return self.by_tag.get(tag) or self.by_vr.get(vr) or Action.KEEP


def _action(value: object, where: str) -> Action:
    try:
        return Action(str(value))
    except ValueError:
        choices = ", ".join(a.value for a in Action)
        raise RulesError(f"{where}: unknown action {value!r} (one of: {choices})") from None


def parse_rules(text: str, origin: str) -> Rules:
    """Validate rules given as TOML text; unknown actions, keywords or keys fail loudly."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{origin}: not valid TOML: {exc}") from None
    unknown = set(data) - {"name", "remove_private", "remove_unknown", "by_vr", "by_keyword"}
    if unknown:
        raise RulesError(f"{origin}: unknown key(s) {', '.join(sorted(unknown))}")
    by_tag: dict[int, Action] = {}
    for keyword, value in data.get("by_keyword", {}).items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise RulesError(f"{origin}: by_keyword.{keyword}: not a DICOM keyword")
        by_tag[tag] = _action(value, f"{origin}: by_keyword.{keyword}")
    by_vr = {
        vr: _action(value, f"{origin}: by_vr.{vr}") for vr, value in data.get("by_vr", {}).items()
    }
    switches = {}
    for key in ("remove_private", "remove_unknown"):
        switches[key] = data.get(key, True)
        if not isinstance(switches[key], bool):
            raise RulesError(f"{origin}: {key} must be true or false")
    return Rules(
        name=str(data.get("name", origin)),
        remove_private=switches["remove_private"],
        remove_unknown=switches["remove_unknown"],
        by_tag=by_tag,
        by_vr=by_vr,
    )


def load_rules(path: Path | None = None) -> Rules:
    """The rules in `path`, or the built-in rule set."""
    path = path or BUILTIN_RULES
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"rules file {path}: {exc.strerror or exc}") from None
    return parse_rules(text, str(path))
