"""The whole anonymization policy: profile and options, our additions, site rules.

Precedence, last wins: PS3.15 Table E.1-1 with the chosen options, then
``rulesets/additions.toml``, then the site rules. Attributes no rule names fall to
`Policy.fallback`, which errs towards removing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pydicom.datadict import (
    dictionary_is_retired,
    dictionary_VR,
    keyword_for_tag,
    tag_for_keyword,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag

from tasks.profile import (
    BASIC_PROFILE,
    OPTIONS,
    MaskRule,
    check_options,
    load_table,
    profile_rules,
)
from tasks.rules import (
    ADDITIONS,
    PRIVATE_ELEMENT,
    Action,
    PrivateKey,
    Rule,
    SiteRules,
    load_rules,
    public_tag,
)

FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UC"})
"""Where anything may be written. Inside a sequence the profile replaces (D) or
cleans (C) as a whole, these are treated the same way unless a rule names them."""

DATE_TIME_VRS = frozenset({"DA", "DT", "TM"})

SHORT_TEXT_VRS = frozenset({"LO", "SH"})
"""Short text: inside a sequence the profile replaces or cleans, cleaned unless a rule
names it (a label, a code meaning can name the patient too)."""

STANDARD_CODING_SCHEMES = frozenset(codes.schemes()) | {"SRT"}
"""Coding schemes whose codes the standard's context groups use (pydicom's code
dictionary), and SRT, the retired designator of SNOMED still sent by many devices.
Codes of any other scheme (99xxx, local ones) are whatever a site typed."""

CODE_VALUE_TAGS = frozenset(
    int(tag_for_keyword(k) or 0) for k in ("CodeValue", "LongCodeValue", "CodeMeaning")
)


def is_local_code(item: Dataset) -> bool:
    """True for a code item whose scheme the standard does not define: its value and
    meaning may be free text or an ID (a patient's number as a local code)."""
    if not any(tag in item for tag in CODE_VALUE_TAGS):
        return False
    scheme = str(item.get("CodingSchemeDesignator", "") or "").strip()
    return scheme not in STANDARD_CODING_SCHEMES or scheme.startswith("99")


RETIRED_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
"""Retired attributes of these VRs are where old devices put free text; no current IOD
needs them, so those no rule names go."""


PATIENT_RULES = {
    tag: Rule(Action.PATIENT, "dicomflow: patient pseudonym (keys the archive)")
    for tag in (0x00100010, 0x00100020)  # PatientName, PatientID
}
"""Always the keyed pseudonym: PS3.15 allows a dummy there, and the archive, the
catalog and later batches of the same patient all key on it."""

COMMAND_GROUP = Rule(Action.REMOVE, "dicomflow: command group (0000,eeee)")
"""DIMSE command elements belong to network messages, never to a stored dataset; found
in one, they hold only what some peer put there (AE titles, error comments)."""


@dataclass(frozen=True)
class Policy:
    """Every rule, compiled once per batch; `rule_for` answers per element."""

    options: frozenset[str]
    by_tag: dict[int, Rule]
    masks: tuple[MaskRule, ...]
    private: Rule
    safe_private: dict[PrivateKey, str]
    """Table E.3.10-1 with the VR of each element, when Retain Safe Private is chosen."""
    private_rules: dict[PrivateKey, Rule]
    site_name: str
    profile_revision: str

    def public_rule(self, tag: BaseTag) -> Rule | None:
        """The rule that names this public attribute, if any."""
        if BaseTag(tag).group == 0x0000:
            return COMMAND_GROUP
        rule = self.by_tag.get(int(tag))
        if rule is None:
            rule = next((m.rule for m in self.masks if m.matches(int(tag))), None)
        return rule

    def private_rule(self, key: PrivateKey | None, vr: str = "") -> Rule:
        """Site rules first, then the safe-private table when that option is on, else remove.

        A safe private date or time (`vr`) follows the date option like any other, and
        a safe private UID is remapped like a public one (unless UIDs are retained).
        """
        if key is not None and key in self.private_rules:
            return self.private_rules[key]
        if key is not None and self.private.action is Action.CLEAN and key in self.safe_private:
            safe = "PS3.15 E.3.10-1 safe private"
            if vr in DATE_TIME_VRS:
                return self.date_rule(vr, safe)
            if vr == "UI" and "retain-uids" not in self.options:
                return Rule(Action.UID, f"{safe}, UID")
            return Rule(Action.KEEP, safe)
        return Rule(Action.REMOVE, self.private.origin)

    def date_rule(self, vr: str, what: str = "dicomflow: date or time") -> Rule:
        """What the chosen date option does to a date or time no table row names, as the
        table does to those it names: remove; move DA and DT by the patient's offset
        and keep times (modified dates); keep (full dates)."""
        if "retain-long-full-dates" in self.options:
            return Rule(Action.KEEP, f"{what}, full dates retained")
        if "retain-long-modified-dates" in self.options:
            shift = Action.KEEP if vr == "TM" else Action.SHIFT_DATE
            return Rule(shift, f"{what}, modified dates")
        return Rule(Action.REMOVE, what)

    def fallback(
        self, tag: BaseTag, vr: str, inside: Action | None, local_code: bool = False
    ) -> Rule:
        """For attributes no rule names.

        Unknown public attributes go (nobody can vouch for them), and so do URLs (they
        can name a host or a patient) and retired text attributes (old devices wrote free
        text there); person names are emptied; UIDs remapped unless the standard defines
        them (or the site keeps UIDs); free text in a sequence the profile replaces or
        cleans shares its fate, and so do the value and meaning of a code of a local
        scheme there (`local_code`: the item is one); short text there is cleaned.
        Dates and times follow the date option (`date_rule`).
        """
        if not keyword_for_tag(tag):
            return Rule(Action.REMOVE, "dicomflow: not in the data dictionary")
        if vr == "UR":
            return Rule(Action.REMOVE, "dicomflow: URL or URI")
        if vr in RETIRED_TEXT_VRS and dictionary_is_retired(tag):
            return Rule(Action.REMOVE, "dicomflow: retired text attribute")
        if vr in DATE_TIME_VRS:
            return self.date_rule(vr)
        if vr == "PN":
            return Rule(Action.EMPTY, "dicomflow: person name")
        if vr == "UI":
            keep = "retain-uids" in self.options
            return Rule(Action.KEEP if keep else Action.UID, "dicomflow: UID")
        if inside in (Action.DUMMY, Action.CLEAN):
            if local_code and int(tag) in CODE_VALUE_TAGS:
                return Rule(inside, "dicomflow: local code in a replaced or cleaned sequence")
            if vr in FREE_TEXT_VRS:
                return Rule(inside, "dicomflow: free text in a replaced or cleaned sequence")
            if vr in SHORT_TEXT_VRS:
                return Rule(Action.CLEAN, "dicomflow: text in a replaced or cleaned sequence")
        return Rule(Action.KEEP, "dicomflow: not named by the profile")

    def describe(self, tags: list[int] | None = None) -> list[tuple[str, str, str, str]]:
        """(tag, keyword, action, origin) for every rule in tag order, or for `tags` only
        (those no rule names shown with their fallback): what will happen."""
        if tags is not None:
            return [self._row(t, self.public_rule(BaseTag(t)) or self._fallback(t)) for t in tags]
        rows = [self._row(tag, r) for tag, r in sorted(self.by_tag.items())]
        rows += [
            (f"({m.mask[:4]},{m.mask[4:]})", "", m.rule.action.value, m.rule.origin)
            for m in self.masks
        ]
        rows += [self._private_row(key, r) for key, r in sorted(self.private_rules.items())]
        safe = " (safe ones of E.3.10-1 kept)" if self.safe_private else ""
        rows.append(("(gggg,xxxx)", "other private", "remove", self.private.origin + safe))
        return rows

    def lookup(self, name: str) -> list[tuple[str, str, str, str]]:
        """`describe` rows for a keyword, a tag, a private ``(gggg,xxee)`` or a private
        creator; raises `LookupError` when `name` is none of these."""
        tag = public_tag(name)
        if tag is not None:
            return self.describe([tag])
        private = PRIVATE_ELEMENT.match(name.strip())
        wanted = (int(private[1], 16), int(private[2], 16)) if private else None
        rows = [
            self._private_row(key, rule)
            for key, rule in sorted(self.private_rules.items())
            if key[0] == name or key[1:] == wanted
        ]
        if private is None and not rows:
            raise LookupError(
                f"{name}: not a DICOM keyword, a tag such as (0008,1030), "
                "a private element such as (0019,xx0C) or a private creator here"
            )
        return [*rows, self.describe()[-1]] if private else rows

    @staticmethod
    def _private_row(key: PrivateKey, rule: Rule) -> tuple[str, str, str, str]:
        creator, group, element = key
        return (f"({group:04X},xx{element:02X})", creator, rule.action.value, rule.origin)

    def _fallback(self, tag: int) -> Rule:
        if BaseTag(tag).is_private:
            return self.private_rule(None)
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            vr = "UN"
        return self.fallback(BaseTag(tag), vr, None)

    @staticmethod
    def _row(tag: int, rule: Rule) -> tuple[str, str, str, str]:
        name = keyword_for_tag(tag) or ""
        return (f"({tag >> 16:04X},{tag & 0xFFFF:04X})", name, rule.action.value, rule.origin)

    def gate_keywords(self, keywords: tuple[str, ...]) -> tuple[str, ...]:
        """The identifying keywords the PHI gate looks for: all but those a rule keeps."""
        kept = {
            k
            for k in keywords
            if (rule := self.by_tag.get(int(tag_for_keyword(k) or 0)))
            and rule.action is Action.KEEP
        }
        return tuple(k for k in keywords if k not in kept)

    def method(self) -> list[str]:
        """De-identification Method values (LO, 64 characters each)."""
        values = [f"dicomflow: PS3.15 E.1-1 Basic Profile ({self.profile_revision})"]
        values += [OPTIONS[o][1] for o in sorted(self.options)]
        values.append(f"site rules: {self.site_name}"[:64])
        return values

    def lineage(self) -> dict[str, str]:
        """What the catalog records about how an instance was anonymized."""
        return {
            "anonymization_profile": f"PS3.15 E.1-1 Basic Profile ({self.profile_revision})",
            "anonymization_options": ",".join(sorted(self.options)),
            "site_rules": self.site_name,
        }

    @cached_property
    def own_values(self) -> frozenset[str]:
        """Text the anonymizer writes itself: markers, code meanings, fixed replacements."""
        values = {*self.method(), *(meaning for _, meaning in self.method_codes())}
        values |= {r.value for r in self.by_tag.values() if r.value is not None}
        values |= {r.value for r in self.private_rules.values() if r.value is not None}
        return frozenset(values)

    def method_codes(self) -> list[tuple[str, str]]:
        """(code value, code meaning) of CID 7050 for the profile and each option."""
        return [BASIC_PROFILE] + [OPTIONS[o] for o in sorted(self.options)]


def build_policy(options: Iterable[str], site_rules: Path | None) -> Policy:
    """Compile the policy; raises `ProfileError` or `RulesError` with a one-line reason."""
    chosen = check_options(options)
    table = load_table()
    profile = profile_rules(table, chosen)
    additions = load_rules(ADDITIONS, origin=f"dicomflow {ADDITIONS.name}")
    site = load_rules(site_rules) if site_rules else SiteRules(name="none")
    return Policy(
        options=chosen,
        by_tag={**profile.by_tag, **additions.by_tag, **site.by_tag, **PATIENT_RULES},
        masks=profile.masks,
        private=profile.private,
        safe_private=profile.safe_private,
        private_rules={**additions.private, **site.private},
        site_name=site.name,
        profile_revision=table.revision,
    )
