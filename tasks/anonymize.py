"""Apply anonymization rules to a dataset in memory; no I/O here.

Every element at every depth, and the file meta information, gets the action its
rule names (`tasks.rules`); private elements go first when the rules say so.
Pixel data is never touched.
"""

from __future__ import annotations

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from receiver import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from tasks.pseudonyms import Pseudonymizer, is_standard_uid
from tasks.rules import Action, Rules


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
        return str(dictionary_VR(elem.tag))
    except KeyError:
        return str(elem.VR)


def is_unknown_public(elem: DataElement) -> bool:
    """A public element the data dictionary does not know: nobody can vouch for its content."""
    return not elem.tag.is_private and not keyword_for_tag(elem.tag)


def _remap_uid_value(value: object, keys: Pseudonymizer, keep_standard: bool) -> object:
    if isinstance(value, MultiValue | list):
        return [_remap_uid_value(item, keys, keep_standard) for item in value]
    text = str(value or "")
    if not text.strip("\x00 ") or (keep_standard and is_standard_uid(text)):
        return value
    return keys.uid(text)


def _apply(
    dataset: Dataset, elem: DataElement, action: Action, keys: Pseudonymizer, patient: str
) -> None:
    if action is Action.KEEP:
        return
    if action is Action.REMOVE:
        del dataset[elem.tag]
    elif action is Action.EMPTY:
        elem.value = Sequence() if elem.VR == "SQ" else None
    elif action in (Action.UID, Action.NEW_UID):
        if isinstance(elem.value, bytes | bytearray):  # encoded as UN/OB: cannot be remapped
            del dataset[elem.tag]
        else:
            elem.value = _remap_uid_value(elem.value, keys, action is Action.UID)
    elif action is Action.PSEUDONYM:
        elem.value = keys.patient_id(str(elem.value or ""))
    elif action is Action.PATIENT_PSEUDONYM:
        elem.value = patient


def apply_rules(ds: Dataset, rules: Rules, keys: Pseudonymizer, patient: str) -> None:
    """Walk `ds` recursively (sequences at any depth) and apply each element's rule."""
    if rules.remove_private:
        ds.remove_private_tags()

    def visit(dataset: Dataset, elem: DataElement) -> None:
        if rules.remove_unknown and is_unknown_public(elem):
            del dataset[elem.tag]
            return
        _apply(dataset, elem, rules.action_for(elem.tag, rule_vr(elem)), keys, patient)

    ds.walk(visit, recursive=True)


def anonymize(ds: Dataset, rules: Rules, keys: Pseudonymizer) -> Dataset:
    """Anonymize `ds` in place and return it.

    The patient pseudonym comes from `patient_key` before any rule runs and becomes
    both Patient ID and Patient Name. The file meta follows the new SOP Instance UID and
    names us as the implementation that wrote the file.
    """
    patient = keys.patient_id(patient_key(ds))
    apply_rules(ds, rules, keys, patient)
    # Type 2 in every image IOD, and the archive and catalog key on them.
    ds.PatientID = patient
    ds.PatientName = patient
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        apply_rules(meta, rules, keys, patient)
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SOPClassUID" in ds:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"dicomflow {rules.name}"
    return ds
