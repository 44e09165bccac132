"""Apply the anonymization policy to a dataset in memory; no I/O here.

Every element at every depth, and the file meta information, gets the action its
rule names (`tasks.policy`). Private elements follow the private rules; a private
creator goes when nothing of its block is left. Pixel data is never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import validate_value

from receiver import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from tasks import decode, phi_gate
from tasks.policy import Policy, is_local_code
from tasks.pseudonyms import Pseudonymizer, is_registered_uid, is_standard_uid
from tasks.replacements import clean_text, dummy, max_length, shift_date
from tasks.rules import DATE_VRS, HASHABLE_VRS, Action, PrivateKey, Rule

PATIENT_ID = BaseTag(0x00100020)
ARCHIVE_KEYS = frozenset(BaseTag(t) for t in (0x00020003, 0x00080018, 0x0020000D, 0x0020000E))
"""Media Storage SOP Instance, SOP Instance, Study and Series Instance UIDs: they key
the archive, so they are always remapped, even when a sender put a registered UID there."""
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT", "UR"})


def patient_key(ds: Dataset) -> str:
    """What identifies the patient: Patient ID, else name and birth date, else the study.

    Without a Patient ID, unrelated patients must not share one pseudonym, so the
    key falls back to more specific values.
    """
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if patient_id:
        return patient_id
    name = str(ds.get("PatientName", "") or "").strip()
    if name:
        return f"name:{name}|{ds.get('PatientBirthDate', '')}"
    return f"study:{ds.get('StudyInstanceUID', '')}"


def rule_vr(elem: DataElement) -> str:
    """The VR the data dictionary gives the element, else the one it was encoded with.

    Rules by VR must not be dodged by encoding, say, a physician's name as LO.
    """
    try:
        vr = str(dictionary_VR(elem.tag))
    except KeyError:
        return str(elem.VR)
    return str(elem.VR) if " or " in vr else vr


REWRITES = frozenset(
    {Action.DUMMY, Action.HASH, Action.SHIFT_DATE, Action.REPLACE, Action.CLEAN}
)
"""Actions that write a new value into the element, which must suit its encoded VR."""


def fits(action: Action, vr: str, value: str | None = None) -> bool:
    """Whether `action` can write a valid value of `vr`, the VR an element was encoded
    with when it differs from the dictionary's (a name sent as LO, a date as US).

    Where it cannot, the element goes: writing the dictionary VR's value into it would
    make a file nobody can write, and keeping the original would leak what the rule
    replaces.
    """
    if vr == "SQ":
        return False  # a sequence where a value was due: its items could hold anything
    if action is Action.DUMMY:
        return dummy(vr) is not None
    if action is Action.HASH:
        return vr in HASHABLE_VRS
    if action is Action.SHIFT_DATE:
        return vr in DATE_VRS
    if action is Action.CLEAN:
        return vr in TEXT_VRS or vr in DATE_VRS or vr == "PN"
    if action is Action.REPLACE:
        try:
            validate_value(vr, value, validation_mode=2)  # 2: raise
        except ValueError:
            return False
        return True
    return True


def _never(_: str) -> bool:
    return False


def _values(value: object) -> list[object]:
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [] if value in (None, "") else [value]


def _private_creators(ds: Dataset) -> dict[tuple[int, int], str]:
    """(group, block) -> creator name, for the private blocks reserved in `ds`."""
    creators: dict[tuple[int, int], str] = {}
    for elem in ds:
        tag = elem.tag
        if tag.is_private and 0x10 <= tag.element <= 0xFF and isinstance(elem.value, str):
            creators[(tag.group, tag.element)] = elem.value.strip()
    return creators


@dataclass(frozen=True)
class _Walker:
    """One instance's anonymization: the policy, keys and what this patient needs."""

    policy: Policy
    keys: Pseudonymizer
    patient: str
    shift_days: int
    whole: frozenset[str]
    parts: frozenset[str]
    little_endian: bool = True

    def dataset(
        self, ds: Dataset, inside: Action | None, inherited: list[str] | None = None
    ) -> None:
        charsets = decode.encodings(ds, inherited)
        creators = _private_creators(ds)
        local_code = inside in (Action.DUMMY, Action.CLEAN) and is_local_code(ds)
        for elem in list(ds):
            tag = elem.tag
            if tag.is_private:
                if not tag.is_private_creator:
                    creator = creators.get((tag.group, tag.element >> 8))
                    key: PrivateKey | None = (
                        (creator, tag.group, tag.element & 0xFF) if creator else None
                    )
                    vr = self._private_vr(key, elem)
                    rule = self.policy.private_rule(key, vr)
                    if rule.action is not Action.REMOVE:
                        decoded = self._decoded(ds, elem, vr, charsets)
                        if decoded is None:
                            continue
                        elem = decoded
                    self.apply(ds, elem, rule, str(elem.VR), inside, charsets)
                continue
            vr = rule_vr(elem)
            decoded = self._decoded(ds, elem, vr, charsets)
            if decoded is None:
                continue
            rule = self.policy.public_rule(tag) or self.policy.fallback(
                tag, vr, inside, local_code
            )
            self.apply(ds, decoded, rule, vr, inside, charsets)
        self._drop_unused_creators(ds)

    def _private_vr(self, key: PrivateKey | None, elem: DataElement) -> str:
        """The VR the safe-private table gives, else pydicom's private dictionary, else the
        encoded one: an implicit VR file gives private elements none."""
        vr = self.policy.safe_private.get(key, "") if key else ""
        if not vr and key:
            try:
                vr = str(private_dictionary_VR(elem.tag, key[0]))
            except KeyError:
                vr = ""
        return vr if vr and " or " not in vr else str(elem.VR)

    def _decoded(
        self, ds: Dataset, elem: DataElement, vr: str, charsets: list[str]
    ) -> DataElement | None:
        """`elem` itself, or, when it holds raw bytes that should be a `vr` value, those
        bytes decoded in its place; None (and the element gone) when they do not decode:
        rules are for values, and bytes nobody can read are not kept."""
        if not decode.is_raw(elem) or vr in decode.BINARY_VRS or vr == str(elem.VR) == "UN":
            return elem
        new = decode.decoded(elem, vr, charsets, self.little_endian)
        if new is None:
            del ds[elem.tag]
            return None
        ds[elem.tag] = new
        return new

    @staticmethod
    def _drop_unused_creators(ds: Dataset) -> None:
        tags = [elem.tag for elem in ds]
        used = {(t.group, t.element >> 8) for t in tags if t.is_private and t.element > 0xFF}
        for tag in tags:
            if tag.is_private_creator and (tag.group, tag.element) not in used:
                del ds[tag]

    def apply(
        self,
        ds: Dataset,
        elem: DataElement,
        rule: Rule,
        vr: str,
        inside: Action | None,
        charsets: list[str] | None = None,
    ) -> None:
        action = rule.action
        encoded = str(elem.VR)
        if action in REWRITES and encoded != vr and not decode.is_raw(elem):
            if action is Action.CLEAN and vr == "PN":
                action = Action.DUMMY  # a person's name stays one whatever its encoding
            elif action is Action.CLEAN and vr in DATE_VRS:
                action = Action.SHIFT_DATE  # and so does a date
            if not fits(action, encoded, rule.value):
                del ds[elem.tag]  # keeping the original is no answer to a rule that replaces it
                return
            vr = encoded
        if vr == "SQ" or elem.VR == "SQ":
            self._sequence(ds, elem, action, inside, charsets)
            return
        if isinstance(elem.value, bytes | bytearray) and action not in (
            Action.KEEP,
            Action.REMOVE,
            Action.EMPTY,
        ):
            action = Action.REMOVE  # encoded as UN/OB: nothing we can rewrite safely
        if action is Action.KEEP:
            return
        if action is Action.REMOVE:
            del ds[elem.tag]
        elif action is Action.EMPTY:
            elem.value = None
        elif action is Action.REPLACE:
            elem.value = rule.value
        elif action is Action.PATIENT:
            self._patient(elem)
        elif action is Action.UID or vr == "UI":
            self._uid(elem, vr, fallback=rule.origin.startswith("dicomflow:"))
        elif action is Action.DUMMY:
            elem.value = dummy(vr)
        elif action is Action.CLEAN:
            self._clean(ds, elem, vr)
        elif action is Action.HASH and vr in HASHABLE_VRS:
            n = max_length(vr)
            elem.value = [self.keys.text(str(v), n) for v in _values(elem.value)] or None
        elif action is Action.SHIFT_DATE and vr in DATE_VRS:
            self._shift(elem, vr)
        elif action in (Action.HASH, Action.SHIFT_DATE):
            del ds[elem.tag]  # a private element of another VR: fail closed

    def _sequence(
        self,
        ds: Dataset,
        elem: DataElement,
        action: Action,
        inside: Action | None,
        charsets: list[str] | None,
    ) -> None:
        """X removes, Z empties; D and C keep the items and treat their free text alike."""
        if action is Action.REMOVE:
            del ds[elem.tag]
            return
        if action is Action.EMPTY or not isinstance(elem.value, Sequence):
            elem.value = Sequence()
            return
        context = action if action in (Action.DUMMY, Action.CLEAN) else inside
        for item in elem.value:
            self.dataset(item, context, charsets)

    def _patient(self, elem: DataElement) -> None:
        # Nested Patient IDs (other patients, sources) get their own pseudonym.
        if elem.tag == PATIENT_ID and elem.value:
            elem.value = self.keys.patient_id(str(elem.value))
        else:
            elem.value = self.patient

    def _uid(self, elem: DataElement, vr: str, fallback: bool) -> None:
        """Remap each UID. Registered ones (SOP classes, transfer syntaxes) stay, except
        in the archive keys; where no rule names the attribute, anything under the
        standard's root stays too."""
        if vr != "UI":
            elem.value = dummy(vr)
            return
        keep: Callable[[str], bool]
        if fallback:
            keep = is_standard_uid
        elif elem.tag in ARCHIVE_KEYS:
            keep = _never
        else:
            keep = is_registered_uid
        new = [
            v if keep(str(v)) else self.keys.uid(str(v))
            for v in _values(elem.value)
            if str(v).strip("\x00 ")
        ]
        elem.value = new or None

    def _clean(self, ds: Dataset, elem: DataElement, vr: str) -> None:
        if vr in TEXT_VRS:
            elem.value = [
                clean_text(str(v), self.whole, self.parts, vr) for v in _values(elem.value)
            ] or None
        elif vr in DATE_VRS:
            self._shift(elem, vr)
        elif vr == "PN":
            elem.value = dummy(vr)
        elif vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            del ds[elem.tag]  # bitmaps and bytes: we cannot see what they show

    def _shift(self, elem: DataElement, vr: str) -> None:
        if vr not in DATE_VRS:
            return
        shifted = [shift_date(str(v), vr, self.shift_days) for v in _values(elem.value)]
        elem.value = [s if s is not None else dummy(vr) for s in shifted] or None


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _mark(ds: Dataset, policy: Policy) -> None:
    """The markers PS3.15 E.1.1 asks a de-identifier to set."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = policy.method()
    ds.DeidentificationMethodCodeSequence = Sequence(
        _code_item(value, meaning) for value, meaning in policy.method_codes()
    )
    if "retain-long-full-dates" in policy.options:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    elif "retain-long-modified-dates" in policy.options:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"


def anonymize(
    ds: Dataset,
    policy: Policy,
    keys: Pseudonymizer,
    identity: tuple[frozenset[str], frozenset[str]] | None = None,
) -> Dataset:
    """Anonymize `ds` in place and return it.

    The patient pseudonym comes from `patient_key` before any rule runs and becomes
    both Patient ID and Patient Name. `identity` is `phi_gate.originals` of `ds` (taken
    here when not given): the values *clean* takes out of text. The file meta follows the
    new SOP Instance UID and names us as the implementation that wrote the file.
    """
    key = patient_key(ds)
    whole, parts = identity or phi_gate.originals(
        ds, policy.gate_keywords(phi_gate.IDENTIFYING_KEYWORDS)
    )
    little_endian = ds.original_encoding[1] is not False  # big endian is retired, but read
    walker = _Walker(
        policy, keys, keys.patient_id(key), keys.date_shift_days(key), whole, parts, little_endian
    )
    walker.dataset(ds, None)
    # Type 2 in every image IOD, and the archive and catalog key on them.
    ds.PatientID = walker.patient
    ds.PatientName = walker.patient
    meta = getattr(ds, "file_meta", None)
    if isinstance(meta, FileMetaDataset):
        replace(walker, little_endian=True).dataset(meta, None)
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = UID(str(ds.SOPInstanceUID))
        if "SOPClassUID" in ds:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    _mark(ds, policy)
    return ds


def archived_uids(policy: Policy, keys: Pseudonymizer, uids: dict[str, str]) -> dict[str, str]:
    """What the archive calls the instances, series or studies with these original UIDs.

    `uids` maps keywords (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) to
    original values; the same rules as `anonymize` apply, so the answer is exactly the
    UID the archive and catalog hold (the original itself under retain-uids). A
    keyword whose rule leaves no value is left out.
    """
    ds = Dataset()
    for keyword, value in uids.items():
        setattr(ds, keyword, value)
    walker = _Walker(policy, keys, "", 0, frozenset(), frozenset())
    walker.dataset(ds, None)
    return {k: str(ds.get(k)) for k in uids if ds.get(k)}
