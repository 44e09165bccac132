"""No PHI leaks: every readable file of pydicom's test files and pydicom-data, anonymized
with the default policy, holds no private tag, no value the profile removes or replaces,
and none of its original identifying strings anywhere in its bytes outside pixel data.

The check is independent of the anonymizer's own PHI gate, and it is shown to fail
when a rule is taken out of the policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import re
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from flows.demo import sample_files
from tasks import phi_gate
from tasks.anonymize import anonymize
from tasks.archive import encode
from tasks.parse import Rejected, read_instance
from tasks.policy import Policy, build_policy
from tasks.pseudonyms import Pseudonymizer, is_standard_uid
from tasks.replacements import DUMMY
from tasks.rules import Action, Rule

KEYS = Pseudonymizer(b"leak-test-salt")

IDENTIFYING = (
    *phi_gate.IDENTIFYING_KEYWORDS,
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "PerformingPhysicianName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "OperatorsName",
    "PersonName",
    "VerifyingObserverName",
    "StationName",
)
"""Whose original values must not appear anywhere in the output (names, IDs, accession,
dates of birth, institution, physicians and staff, addresses, phones, devices)."""

REPLACING = (Action.REMOVE, Action.EMPTY, Action.DUMMY, Action.UID)
MIN_LENGTH = 4
MIN_DIGITS = 6
"""Shorter strings ('CT', '1', 'M', '0010') occur in any file by chance."""
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
WORD = re.compile(r"[^\W_]+")
OURS = {str(v).upper() for v in DUMMY.values()} | {"ANONYMIZED", "ANONYMOUS"}


def quiet() -> None:
    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


@cache
def corpus() -> tuple[Path, ...]:
    """The sample files our parser accepts (the rest are quarantined, tested elsewhere)."""
    quiet()
    readable = []
    for path in sample_files():
        try:
            read_instance(path)
        except Rejected:
            continue
        readable.append(path)
    return tuple(readable)


def _strings(value: object) -> Iterator[str]:
    values = value if isinstance(value, MultiValue | list) else [value]
    for item in values:
        text = str(item).strip("\x00 ")
        if text:
            yield text
            if "^" in text or "=" in text or " " in text:  # name components, words
                yield from (p for p in text.replace("=", "^").replace(" ", "^").split("^"))


def _rule(policy: Policy, elem) -> Rule:
    return policy.public_rule(elem.tag) or policy.fallback(elem.tag, elem.VR, None)


def kept_words(ds: Dataset, policy: Policy) -> set[str]:
    """Words of the values the policy keeps on purpose (Manufacturer, code meanings ...).

    An identifying string that is also one of these (a station named after its
    maker) is no evidence of a leak.
    """
    words: set[str] = set()
    identifying = {tag_for_keyword(k) for k in IDENTIFYING}
    for elem in ds.iterall():
        if elem.tag in identifying or elem.tag.is_private or elem.VR not in TEXT_VRS:
            continue
        if _rule(policy, elem).action is Action.KEEP:
            for text in _strings(elem.value):
                words.add(text.upper())
                words.update(w.upper() for w in WORD.findall(text))
    return words


def identifying_strings(ds: Dataset, policy: Policy) -> set[str]:
    """Original identifying strings of `ds`, at any depth, long enough to be evidence."""
    found: set[str] = set()
    wanted = {tag_for_keyword(k) for k in IDENTIFYING}
    for elem in ds.iterall():
        if elem.tag in wanted and elem.value not in (None, ""):
            found.update(_strings(elem.value))
        elif elem.VR == "UI" and elem.value and _rule(policy, elem).action is not Action.KEEP:
            found.update(s for s in _strings(elem.value) if not is_standard_uid(s))
    kept = kept_words(ds, policy) | OURS
    return {
        s.strip()
        for s in found
        if len(s.strip()) >= (MIN_DIGITS if s.strip().isdigit() else MIN_LENGTH)
        and s.strip().upper() not in kept
    }


def replaced_values(ds: Dataset, policy: Policy) -> set[tuple[int, str]]:
    """(tag, value) of every element whose rule replaces or removes it."""
    replaced = set()
    for elem in ds.iterall():
        rule = policy.public_rule(elem.tag)
        if rule and rule.action in REPLACING and elem.VR not in ("SQ", "OB", "OW", "UN"):
            value = str(elem.value).strip("\x00 ")
            if value and value.upper() not in OURS:
                replaced.add((int(elem.tag), value))
    return replaced


def encodings(text: str, ds: Dataset) -> set[bytes]:
    """`text` as it could be written: ASCII, Latin-1, UTF-8, and the file's own charset."""
    out = set()
    for codec in ("ascii", "latin-1", "utf-8"):
        with contextlib.suppress(UnicodeEncodeError):
            out.add(text.encode(codec))
    return {b for b in out if len(b) >= MIN_LENGTH}


def without_pixels(ds: Dataset) -> Dataset:
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            del ds[keyword]
    return ds


def leaks(path: Path, policy: Policy, reference: Policy | None = None) -> list[str]:
    """What of `path`'s identity survives anonymization with `policy`; empty when nothing.

    What must change is judged by `reference` (the policy as built, by default
    `policy` itself), so a weakened policy is held to the full one.
    """
    reference = reference or policy
    original = read_instance(path)
    strings = identifying_strings(original, reference)
    replaced = replaced_values(original, reference)
    anonymized = anonymize(read_instance(path), policy, KEYS)
    data = encode(without_pixels(anonymized))
    found = []
    reread = dcmread(io.BytesIO(data))
    for elem in reread.iterall():
        if elem.tag.is_private and not policy.safe_private:
            found.append(f"private {elem.tag}")
        elif (int(elem.tag), str(elem.value).strip("\x00 ")) in replaced:
            found.append(f"{elem.keyword or elem.tag} kept its value")
    for text in strings:
        if any(raw in data for raw in encodings(text, original)):
            found.append(f"{text!r} in the bytes")
    return found


def test_corpus_is_real_and_large() -> None:
    assert len(corpus()) >= 150, "pydicom-data is missing: pip install -e '.[test]'"


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["clean-descriptors", "clean-structured-content", "clean-graphics"],
        ["retain-long-modified-dates", "retain-patient-characteristics", "retain-safe-private"],
    ],
    ids=["basic", "clean-options", "retain-options"],
)
def test_no_phi_leaks_in_any_corpus_file(options: list[str]) -> None:
    quiet()
    policy = build_policy(options, None)
    failures = {p.name: found for p in corpus() if (found := leaks(p, policy))}
    assert not failures, failures


@pytest.mark.parametrize(
    "keyword",
    [
        "InstitutionName",
        "AccessionNumber",
        "PatientBirthDate",
        "OtherPatientIDs",
        "PatientAddress",
        "StationName",
    ],
)
def test_the_leak_check_fails_when_a_rule_is_removed(keyword: str) -> None:
    """With the rule for `keyword` turned into keep, its values stay: the check above
    must see it.

    (Keep, not merely no rule: an attribute no rule names meets the fallbacks, which
    remove birth dates like any other date and OtherPatientIDs like any retired text.)
    """
    quiet()
    full = build_policy([], None)
    tag = int(tag_for_keyword(keyword) or 0)
    weakened = dataclasses.replace(
        full, by_tag={**full.by_tag, tag: Rule(Action.KEEP, "weakened for the test")}
    )
    found = [f for p in corpus() for f in leaks(p, weakened, full)]
    assert found, f"no leak seen with the {keyword} rule turned into keep"


def with_staff_and_spellings() -> Dataset:
    """A patient and staff whose names and IDs turn up in descriptors written otherwise."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "O'Brien^Mary-Kate"
    ds.PatientBirthDate = "19610704"
    ds.PatientID = "PID-221B"
    ds.OtherPatientIDs = "4455667"
    ds.AdmissionID = "ADM-998877"
    ds.OperatorsName = "Watson^John"
    ds.ReferringPhysicianName = "Moriarty^James"
    ds.PerformingPhysicianName = "Zoe\u0308^Strauß"  # a decomposed ë
    return ds


WRITTEN_OTHERWISE = {
    "StudyDescription": "CT for OBrien MaryKate",
    "SeriesDescription": "tech WATSON, ref Dr Moriarty",
    "ImageComments": "adm ADM-998877 seen by ZOË STRAUSS",
    "PerformedProcedureStepDescription": "born 1961-07-04",
    "RequestedProcedureDescription": "dob 04.07.1961 or 1961/07/04",
}
GONE = ("brien", "marykate", "1961", "watson", "moriarty", "998877", "zoë", "strauss")


def test_clean_takes_out_staff_names_ids_and_other_spellings() -> None:
    ds = with_staff_and_spellings()
    for keyword, text in WRITTEN_OTHERWISE.items():
        setattr(ds, keyword, text)
    policy = build_policy(["clean-descriptors"], None)
    out = anonymize(ds, policy, KEYS)
    for keyword in WRITTEN_OTHERWISE:
        cleaned = str(out.get(keyword, "")).casefold()
        assert "***" in cleaned, keyword
        assert not [g for g in GONE if g in cleaned], (keyword, cleaned)
    assert str(out.StudyDescription).startswith("CT for ")


@pytest.mark.parametrize("keyword", list(WRITTEN_OTHERWISE))
def test_phi_gate_finds_staff_names_ids_and_other_spellings(keyword: str) -> None:
    whole, parts = phi_gate.originals(with_staff_and_spellings())
    kept = Dataset()
    setattr(kept, keyword, WRITTEN_OTHERWISE[keyword])
    with pytest.raises(phi_gate.PhiFound):
        phi_gate.check(kept, whole, parts)


def gate_hit(ds: Dataset) -> bool:
    whole, parts = phi_gate.originals(with_staff_and_spellings())
    try:
        phi_gate.check(ds, whole, parts)
    except phi_gate.PhiFound:
        return True
    return False


def test_phi_gate_reads_code_strings_and_text_sent_as_bytes() -> None:
    """CS values, and text encoded as UN or OB (public or private), are searched."""
    cs = Dataset()
    cs.BodyPartExamined = "MORIARTY"
    assert gate_hit(cs)
    public = Dataset()
    public.add(DataElement(0x00081090, "OB", b"Watson's scanner"))  # ManufacturerModelName
    assert gate_hit(public)
    private = Dataset()
    private.private_block(0x0009, "ACME 1.0", create=True).add_new(0x01, "UN", b"for OBrien ")
    assert gate_hit(private)
    pixels = Dataset()
    pixels.add(DataElement(0x7FE00010, "OB", b"WATSON"))  # pixel data is not text
    assert not gate_hit(pixels)


def test_phi_gate_matches_whole_words_and_digit_runs_equal_to_an_id() -> None:
    def text(value: str) -> Dataset:
        ds = Dataset()
        ds.StudyDescription = value
        return ds

    assert gate_hit(text("ref PID-221B."))
    assert not gate_hit(text("XPID-221BX"))  # another word that merely contains the ID
    assert gate_hit(text("MRN4455667"))  # the digits of OtherPatientIDs, run into a word
    assert not gate_hit(text("44556670"))
