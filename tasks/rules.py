"""Anonymization rules as data: the actions, and the site rules file that names them.

A site rules file (TOML) says, per attribute, what to do on top of the PS3.15
profile (`tasks.profile`)::

    name = "our-research-policy-3"

    [attributes]
    StudyDescription = "keep"
    "(0008,0080)" = { replace = "Research Hospital" }
    AccessionNumber = "hash"

    [private."SIEMENS MR HEADER"]
    "(0019,xx0C)" = "keep"

Every mistake is reported with the file and the line it is on.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.tag import Tag
from pydicom.valuerep import validate_value

ADDITIONS = Path(__file__).with_name("rulesets") / "additions.toml"
"""Our own rules on top of the profile: attributes the table does not name."""


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the line and the entry."""


class Action(StrEnum):
    """What happens to one attribute."""

    KEEP = "keep"
    REMOVE = "remove"  # PS3.15 X
    EMPTY = "empty"  # PS3.15 Z
    DUMMY = "dummy"  # PS3.15 D: a harmless value of the right VR
    CLEAN = "clean"  # PS3.15 C: keep the value with identifying values taken out
    UID = "uid"  # PS3.15 U: keyed, consistent replacement UID
    REPLACE = "replace"  # a fixed value given by the rule
    HASH = "hash"  # keyed, deterministic replacement text
    SHIFT_DATE = "shift-date"  # dates moved by the patient's keyed offset
    PATIENT = "patient-pseudonym"  # the patient's pseudonym


@dataclass(frozen=True)
class Rule:
    """One attribute's action, with where the rule came from (for docs and errors)."""

    action: Action
    origin: str
    value: str | None = None


PRIVATE_ELEMENT = re.compile(r"^\(([0-9A-Fa-f]{4}),\s*[xX]{2}([0-9A-Fa-f]{2})\)$")
TAG = re.compile(r"^\(([0-9A-Fa-f]{4}),\s*([0-9A-Fa-f]{4})\)$|^([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})$")

RESERVED = {
    0x00100010: "PatientName and PatientID always get the patient pseudonym",
    0x00100020: "PatientName and PatientID always get the patient pseudonym",
    0x7FE00010: "pixel data is never changed by anonymization",
    0x7FE00008: "pixel data is never changed by anonymization",
    0x7FE00009: "pixel data is never changed by anonymization",
}
"""Attributes a rules file may not name, and why."""

MAX_NAME = 52
"""A rule set's name goes into De-identification Method (LO, 64) after 'site rules: '."""

HASHABLE_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
DATE_VRS = frozenset({"DA", "DT"})

PrivateKey = tuple[str, int, int]
"""(private creator, group, element low byte): one private attribute of one creator."""


@dataclass(frozen=True)
class SiteRules:
    """A validated rules file: actions by public tag and by private attribute."""

    name: str
    by_tag: dict[int, Rule] = field(default_factory=dict)
    private: dict[PrivateKey, Rule] = field(default_factory=dict)


def _line_of(text: str, key: str, after: int = 0) -> int:
    """The first line after line `after` on which `key` is a key or names a table
    (tomllib gives no positions)."""
    quoted = rf"(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')"
    pattern = re.compile(rf"^[ \t]*(?:{quoted}[ \t]*=|\[+[^\]\n]*{quoted}[ \t]*\])", re.M)
    start = 0
    for _ in range(after):
        start = text.find("\n", start) + 1
    found = pattern.search(text, start)
    return text.count("\n", 0, found.start()) + 1 if found else 0


def public_tag(key: str) -> int | None:
    """The tag a keyword or a ``(gggg,eeee)`` string names; None if neither."""
    tag = tag_for_keyword(key)
    if tag is not None:
        return int(tag)
    match = TAG.match(key.strip())
    if match:
        group, element = (match[1], match[2]) if match[1] else (match[3], match[4])
        return int(Tag(int(group, 16), int(element, 16)))
    return None


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


class _Reader:
    """Turns one parsed TOML document into rules, with line-numbered errors."""

    def __init__(self, text: str, origin: str) -> None:
        self.text = text
        self.origin = origin

    def fail(self, key: str, message: str) -> RulesError:
        line = _line_of(self.text, key)
        where = f"{self.origin} line {line}" if line else self.origin
        return RulesError(f"{where}: {key}: {message}")

    def rule(self, key: str, value: object, vr: str) -> Rule:
        fixed: str | None = None
        if isinstance(value, dict):
            if set(value) != {"replace"}:
                raise self.fail(key, 'a table rule must be { replace = "value" }')
            action, fixed = Action.REPLACE, str(value["replace"])
        else:
            try:
                action = Action(str(value))
            except ValueError:
                hidden = (Action.REPLACE, Action.PATIENT)
                choices = ", ".join(a.value for a in Action if a not in hidden)
                raise self.fail(
                    key, f'unknown action {value!r} (one of: {choices}; or {{ replace = "..." }})'
                ) from None
            if action is Action.PATIENT:
                raise self.fail(key, "patient-pseudonym is reserved for PatientID and PatientName")
        if action is Action.UID and vr and vr != "UI":
            raise self.fail(key, f"uid needs a UI attribute; this one is {vr}")
        if action is Action.HASH and vr and vr not in HASHABLE_VRS:
            raise self.fail(key, f"hash needs a text attribute; this one is {vr}")
        if action is Action.SHIFT_DATE and vr and vr not in DATE_VRS:
            raise self.fail(key, f"shift-date needs a DA or DT attribute; this one is {vr}")
        if action is Action.REPLACE and vr and fixed is not None:
            try:
                validate_value(vr, fixed, validation_mode=2)  # 2: raise
            except ValueError as exc:
                raise self.fail(key, f"replacement not valid for VR {vr}: {exc}") from None
        return Rule(action, f"{self.origin} line {_line_of(self.text, key)}", fixed)

    def attributes(self, table: object) -> dict[int, Rule]:
        if not isinstance(table, dict):
            raise RulesError(f"{self.origin}: [attributes] must be a table")
        rules: dict[int, Rule] = {}
        keys: dict[int, str] = {}
        for key, value in table.items():
            tag = public_tag(key)
            if tag is None:
                raise self.fail(key, "not a DICOM keyword or a tag such as (0008,1030)")
            if Tag(tag).is_private:
                raise self.fail(key, 'a private attribute goes under [private."CREATOR"]')
            if Tag(tag).group == 0x0000:
                raise self.fail(key, "command elements (0000,eeee) are always removed")
            if tag in RESERVED:
                raise self.fail(key, f"cannot be changed by rules: {RESERVED[tag]}")
            if tag in keys:
                first = _line_of(self.text, keys[tag])
                raise self.fail(key, f"the same attribute as {keys[tag]} (line {first})")
            keys[tag] = key
            rules[tag] = self.rule(key, value, _vr(tag))
        return rules

    def private(self, table: object) -> dict[PrivateKey, Rule]:
        if not isinstance(table, dict):
            raise RulesError(f'{self.origin}: [private."CREATOR"] must be tables')
        rules: dict[PrivateKey, Rule] = {}
        for creator, elements in table.items():
            if not creator.strip():
                raise RulesError(f'{self.origin}: [private.""]: the private creator is empty')
            if not isinstance(elements, dict):
                raise self.fail(creator, 'must be a table of "(gggg,xxee)" = action')
            for key, value in elements.items():
                match = PRIVATE_ELEMENT.match(key.strip())
                if not match or int(match[1], 16) % 2 == 0:
                    raise self.fail(key, "not a private element such as (0019,xx0C)")
                rules[(creator, int(match[1], 16), int(match[2], 16))] = self.rule(key, value, "")
        return rules


def parse_rules(text: str, origin: str) -> SiteRules:
    """Validate a rules file given as text; every problem names its line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{origin}: not valid TOML: {exc}") from None
    reader = _Reader(text, origin)
    unknown = set(data) - {"name", "attributes", "private"}
    if unknown:
        key = sorted(unknown)[0]
        raise reader.fail(key, "unknown key (expected name, [attributes], [private.CREATOR])")
    name = data.get("name", Path(origin).stem)
    if not isinstance(name, str) or not name.strip() or "\\" in name or len(name) > MAX_NAME:
        raise reader.fail("name", f"must be text of 1 to {MAX_NAME} characters, no backslash")
    return SiteRules(
        name=name.strip(),
        by_tag=reader.attributes(data.get("attributes", {})),
        private=reader.private(data.get("private", {})),
    )


def load_rules(path: Path, origin: str | None = None) -> SiteRules:
    """The rules in the file at `path`; errors name it as `origin` (default: the path)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise RulesError(f"rules file {path}: {reason}") from None
    return parse_rules(text, origin or str(path))
