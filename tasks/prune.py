"""Drop the private elements the policy removes before anything parses their values.

A CT from a scanner carries most of its elements in private blocks (179 of 256 in
pydicom's CT_small.dcm), and the anonymizer removes nearly all of them. pydicom
parses a value the first time anything looks at it, and parsing is most of what an
autoload batch costs; an element removed while still raw is never parsed. Only the
private creators are read (to know each block's owner), and the decision is the one
`tasks.anonymize` takes for the element, so the archived file is the same.

Private sequences stay for the anonymizer: their items may hold identifying values
the PHI gate must know about (`tasks.phi_gate.originals`), whatever becomes of them.
"""

from __future__ import annotations

from pydicom.datadict import private_dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from tasks.policy import Policy
from tasks.rules import Action

UNDEFINED_LENGTH = 0xFFFFFFFF


def _creators(ds: Dataset, tags: list[BaseTag]) -> dict[tuple[int, int], str]:
    """(group, block) -> creator name; only the creator elements are parsed."""
    creators: dict[tuple[int, int], str] = {}
    for tag in tags:
        if tag.is_private and 0x10 <= tag.element <= 0xFF:
            value = ds[tag].value
            if isinstance(value, str):
                creators[(tag.group, tag.element)] = value.strip()
    return creators


def _may_be_sequence(raw: RawDataElement, creator: str | None) -> bool:
    """A sequence, or maybe one: explicit SQ, undefined length, or implicit VR that the
    private dictionary calls SQ."""
    if raw.VR == "SQ" or raw.length == UNDEFINED_LENGTH:
        return True
    if raw.VR is None and creator:
        try:
            return "SQ" in str(private_dictionary_VR(raw.tag, creator))
        except KeyError:
            return False
    return False


def drop_removed_private(ds: Dataset, policy: Policy) -> int:
    """Delete the still-unparsed top-level private elements `policy` removes; how many.

    Parsed elements and sequences are left alone: the anonymizer deals with those.
    """
    tags = list(ds.keys())
    creators = _creators(ds, tags)
    dropped = 0
    for tag in tags:
        if not tag.is_private or tag.is_private_creator:
            continue
        raw = ds.get_item(tag)
        if not isinstance(raw, RawDataElement):
            continue
        creator = creators.get((tag.group, tag.element >> 8))
        if _may_be_sequence(raw, creator):
            continue
        key = (creator, tag.group, tag.element & 0xFF) if creator else None
        if policy.private_rule(key).action is Action.REMOVE:
            del ds[tag]
            dropped += 1
    return dropped
