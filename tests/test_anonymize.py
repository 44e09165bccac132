"""Anonymization rules on real pydicom test files: relations, not golden values."""

from __future__ import annotations

import copy
import datetime as dt
import io
import re

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from tasks.anonymize import anonymize, patient_key
from tasks.archive import encode
from tasks.policy import build_policy
from tasks.pseudonyms import Pseudonymizer, is_standard_uid
from tasks.rules import Action

KEYS = Pseudonymizer(b"unit-test-salt")
RULES = build_policy([], None)


def all_elements(ds: Dataset):
    yield from ds.iterall()


def with_nested_private(ds: Dataset) -> Dataset:
    """Add a private block at top level and two sequence levels down, with identifying text."""
    ds.private_block(0x0009, "ACME 1.0", create=True).add_new(0x01, "LO", "secret-top")
    inner = Dataset()
    inner.private_block(0x0011, "ACME 1.0", create=True).add_new(0x02, "LO", "secret-deep")
    inner.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    inner.PerformingPhysicianName = "Watson^John"
    middle = Dataset()
    middle.ReferencedImageSequence = Sequence([inner])
    ds.ReferencedSeriesSequence = Sequence([middle])
    return ds


def test_default_policy_is_the_basic_profile_with_private_tags_removed() -> None:
    assert RULES.private_rule(("ACME 1.0", 0x0009, 0x01)).action is Action.REMOVE
    assert RULES.by_tag[0x00080018].action is Action.UID  # SOPInstanceUID: U
    assert RULES.by_tag[0x00080080].action is Action.DUMMY  # InstitutionName: X/Z/D
    assert RULES.by_tag[0x00081030].action is Action.REMOVE  # StudyDescription: X
    assert RULES.by_tag[0x00100040].action is Action.EMPTY  # PatientSex: Z


def test_private_tags_removed_at_every_depth() -> None:
    ds = with_nested_private(dcmread(get_testdata_file("CT_small.dcm")))
    anonymize(ds, RULES, KEYS)
    assert not [e for e in all_elements(ds) if e.tag.is_private]
    text = str(ds)
    assert "secret-top" not in text and "secret-deep" not in text


def test_identifying_values_leave_no_trace() -> None:
    ds = with_nested_private(dcmread(get_testdata_file("CT_small.dcm")))
    ds.InstitutionName = "General Hospital"
    ds.ReferringPhysicianName = "Holmes^Sherlock"
    ds.AccessionNumber = "ACC12345"
    originals = [str(ds.PatientName), str(ds.PatientID), "Holmes", "Watson", "General Hospital"]
    originals += [ds.AccessionNumber, ds.StudyInstanceUID, ds.SOPInstanceUID]
    anonymize(ds, RULES, KEYS)
    values = [str(e.value) for e in all_elements(ds) if e.VR not in ("OB", "OW", "SQ")]
    values += [str(e.value) for e in ds.file_meta]
    for original in originals:
        assert not [v for v in values if original in v], original
    assert ds.PatientIdentityRemoved == "YES"


def test_uids_remapped_consistently_everywhere() -> None:
    first = with_nested_private(dcmread(get_testdata_file("CT_small.dcm")))
    second = copy.deepcopy(first)
    original_sop = first.SOPInstanceUID
    anonymize(first, RULES, KEYS)
    anonymize(second, RULES, Pseudonymizer(b"unit-test-salt"))  # a later run, same salt
    assert first.SOPInstanceUID == second.SOPInstanceUID == KEYS.uid(original_sop)
    assert first.SOPInstanceUID.startswith("2.25.")
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    ref = first.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert ref == first.SOPInstanceUID  # references follow their targets
    assert Pseudonymizer(b"another-salt").uid(original_sop) != first.SOPInstanceUID


def test_standard_uids_are_kept() -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    sop_class, syntax = ds.SOPClassUID, ds.file_meta.TransferSyntaxUID
    anonymize(ds, RULES, KEYS)
    assert ds.SOPClassUID == sop_class
    assert ds.file_meta.MediaStorageSOPClassUID == sop_class
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert is_standard_uid("1.2.840.10008.5.1.4.1.1.2")
    assert not is_standard_uid("1.3.6.1.4.1.5962.1.1.1")


def test_pixel_data_untouched() -> None:
    ds = dcmread(get_testdata_file("MR_small.dcm"))
    pixels = ds.PixelData
    anonymize(ds, RULES, KEYS)
    assert ds.PixelData == pixels


def test_same_patient_same_pseudonym_across_studies() -> None:
    one = dcmread(get_testdata_file("CT_small.dcm"))
    two = dcmread(get_testdata_file("CT_small.dcm"))
    two.StudyInstanceUID = "1.2.3.4.5.6.7"
    anonymize(one, RULES, KEYS)
    anonymize(two, RULES, KEYS)
    assert one.PatientID == two.PatientID == one.PatientName
    assert one.StudyInstanceUID != two.StudyInstanceUID


def test_patients_without_id_do_not_merge() -> None:
    one, two = Dataset(), Dataset()
    one.PatientID, two.PatientID = "", ""
    one.StudyInstanceUID, two.StudyInstanceUID = "1.2.3", "1.2.4"
    assert patient_key(one) != patient_key(two)
    one.PatientName = two.PatientName = "Doe^Jane"
    assert patient_key(one) == patient_key(two)  # same name, same (empty) birth date


def test_command_group_elements_are_removed() -> None:
    """Group 0000 belongs to DIMSE messages; in a stored dataset it only carries what a
    peer put there (an originator's AE title, an error comment naming the patient)."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.MoveOriginatorApplicationEntityTitle = "SECRETPACS"
    ds.AffectedSOPInstanceUID = ds.SOPInstanceUID
    ds.ErrorComment = "store failed for Holmes^Sherlock"
    ds.MessageID = 7
    anonymize(ds, RULES, KEYS)
    assert not [e for e in ds if e.tag.group == 0x0000]
    assert RULES.describe([0x00001030])[0][2] == "remove"


def test_urls_and_retired_text_no_rule_names_are_removed() -> None:
    """A URL can name a patient or a host; retired text attributes are where old devices
    wrote free text. Presentation addresses in the file meta say where a file came from."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.RetrieveURL = "https://pacs.example.org/wado?patient=Holmes"
    ds.ContactURI = "mailto:sherlock.holmes@example.org"
    ds.RecognitionCode = "HOLMES S"  # retired SH
    ds.Reference = "seen by Dr Watson"  # retired LO
    ds.file_meta.SourcePresentationAddress = "dicom://10.1.2.3:104"
    ds.file_meta.SendingPresentationAddress = "dicom://10.1.2.4:104"
    ds.file_meta.ReceivingPresentationAddress = "dicom://10.1.2.5:104"
    data = encode(anonymize(ds, RULES, KEYS))
    for secret in (b"Holmes", b"holmes", b"HOLMES", b"Watson", b"10.1.2."):
        assert secret not in data, secret
    out = dcmread(io.BytesIO(data))
    for keyword in ("RetrieveURL", "ContactURI", "RecognitionCode", "Reference"):
        assert keyword not in out, keyword
    assert not [e for e in out.file_meta if e.VR == "UR"]


def with_unnamed_dates() -> Dataset:
    """Dates and times no row of Table E.1-1 names, public and safe private."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SecondaryReviewDate = "19610704"
    ds.SecondaryReviewTime = "101112"
    ds.StudyUpdateDateTime = "19610704101112"
    item = Dataset()
    item.DateOfGainCalibration = "19610704"
    ds.ReferencedImageSequence = Sequence([item])
    # Stage Timer Time, safe in PS3.15 Table E.3.10-1, which gives it no VR
    ds.private_block(0x0119, "SIEMENS Ultrasound SC2000", create=True).add_new(0x11, "TM", "101112")
    return ds


def dates_left(ds: Dataset) -> list[str]:
    return [str(e.value) for e in ds.iterall() if e.VR in ("DA", "DT", "TM") and e.value]


def test_dates_no_rule_names_follow_the_date_option() -> None:
    """Unnamed dates and times go by default, move with the patient's offset under
    modified dates, and stay only under full dates."""
    safe = ["retain-safe-private"]
    basic = anonymize(with_unnamed_dates(), build_policy(safe, None), KEYS)
    assert not [v for v in dates_left(basic) if "1961" in v or v == "101112"]
    assert "SecondaryReviewTime" not in basic
    modified = anonymize(
        with_unnamed_dates(), build_policy([*safe, "retain-long-modified-dates"], None), KEYS
    )
    days = KEYS.date_shift_days(patient_key(with_unnamed_dates()))
    moved = (dt.date(1961, 7, 4) + dt.timedelta(days=days)).strftime("%Y%m%d")
    assert modified.SecondaryReviewDate == moved
    assert modified.StudyUpdateDateTime == f"{moved}101112"
    assert modified.ReferencedImageSequence[0].DateOfGainCalibration == moved
    assert modified.SecondaryReviewTime == "101112"  # times stay once the date has moved
    assert not [v for v in dates_left(modified) if "19610704" in v]
    full = anonymize(
        with_unnamed_dates(), build_policy([*safe, "retain-long-full-dates"], None), KEYS
    )
    assert full.SecondaryReviewDate == "19610704"
    block = full.private_block(0x0119, "SIEMENS Ultrasound SC2000")
    assert full[block.get_tag(0x11)].value == "101112"


SOP_CLASS_OR_SYNTAX = re.compile(r"SOPClass|TransferSyntax")


def test_sop_class_and_transfer_syntax_uids_are_kept_by_our_additions() -> None:
    """Every UID attribute the dictionary names for a SOP class or a transfer syntax is
    kept explicitly, so no fallback remaps a vendor's private SOP class."""
    policy = RULES
    named = [
        (tag, keyword)
        for tag, (vr, _, _, _, keyword) in DicomDictionary.items()
        if vr == "UI" and SOP_CLASS_OR_SYNTAX.search(keyword) and tag >> 16 != 0x0000
    ]
    assert len(named) >= 15
    for tag, keyword in named:
        rule = policy.public_rule(BaseTag(tag))
        assert rule is not None and rule.action is Action.KEEP, keyword
        assert "additions" in rule.origin, keyword


def test_a_private_sop_class_survives_in_references() -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    private_class = "1.3.12.2.1107.5.9.1"  # a vendor's own SOP class
    image = Dataset()
    image.ReferencedSOPClassUID = private_class
    image.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedImageSequence = Sequence([image])
    ds.SOPClassesInStudy = [private_class, ds.SOPClassUID]
    syntax = ds.file_meta.TransferSyntaxUID
    anonymize(ds, RULES, KEYS)
    kept = ds.ReferencedImageSequence[0]
    assert kept.ReferencedSOPClassUID == private_class
    assert kept.ReferencedSOPInstanceUID != "1.2.3.4.5"
    assert list(ds.SOPClassesInStudy) == [private_class, ds.SOPClassUID]
    assert ds.file_meta.TransferSyntaxUID == syntax


def with_safe_private_as_un() -> Dataset:
    """CT with three safe private elements (PS3.15 E.3.10-1) as an implicit VR file has
    them: NQHeader Analyzed Series UID (UI), GEMS_PARM_01 slice and b-value (IS), and
    GEMS_ACQU_01 Internal Pulse Sequence Name (LO), all VR UN."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    series = str(ds.SeriesInstanceUID)
    padded = (series + "\x00" * (len(series) % 2)).encode()
    ds.private_block(0x0099, "NQHeader", create=True).add_new(0x02, "UN", padded)
    ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "UN", b"1000\\0\\0\\0 ")
    ds.private_block(0x0019, "GEMS_ACQU_01", create=True).add_new(0x9E, "UN", b"3D FSPGR")
    return ds


def test_safe_private_elements_sent_as_un_are_decoded_and_their_uids_remapped() -> None:
    """The safe-private table's VR decodes them, and a private UID gets the same keyed
    new UID as the public one it repeats."""
    series = str(with_safe_private_as_un().SeriesInstanceUID)
    out = anonymize(with_safe_private_as_un(), build_policy(["retain-safe-private"], None), KEYS)
    uid = out[out.private_block(0x0099, "NQHeader").get_tag(0x02)]
    assert uid.VR == "UI" and uid.value == out.SeriesInstanceUID == KEYS.uid(series)
    b_values = out[out.private_block(0x0043, "GEMS_PARM_01").get_tag(0x39)]
    assert b_values.VR == "IS" and list(b_values.value) == [1000, 0, 0, 0]
    name = out[out.private_block(0x0019, "GEMS_ACQU_01").get_tag(0x9E)]
    assert (name.VR, name.value) == ("LO", "3D FSPGR")
    assert series.encode() not in encode(out)
    options = ["retain-safe-private", "retain-uids"]
    kept = anonymize(with_safe_private_as_un(), build_policy(options, None), KEYS)
    assert kept[kept.private_block(0x0099, "NQHeader").get_tag(0x02)].value == series


def test_text_sent_as_bytes_is_decoded_for_its_rule() -> None:
    """A descriptor encoded as OB is cleaned like text, not kept as opaque bytes."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Holmes^Sherlock"
    ds.add(DataElement(0x00081030, "OB", b"CT chest for Sherlock Holmes"))  # StudyDescription
    ds.add(DataElement(0x00081090, "OB", b"Mega Scanner"))  # ManufacturerModelName (kept)
    out = anonymize(ds, build_policy(["clean-descriptors"], None), KEYS)
    assert (out["StudyDescription"].VR, out.StudyDescription) == ("LO", "CT chest for *** ***")
    assert (out["ManufacturerModelName"].VR, out.ManufacturerModelName) == ("LO", "Mega Scanner")


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def with_sr_content() -> Dataset:
    """SR-like content: a code of a local scheme holding the patient's ID and name, a
    standard code, and short free text (LO) naming the patient."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName, ds.PatientID = "Holmes^Sherlock", "PID-221B"
    finding = Dataset()
    finding.ValueType = "CODE"
    finding.ConceptNameCodeSequence = Sequence([code("PID-221B", "99BAKER", "Sherlock Holmes")])
    finding.ConceptCodeSequence = Sequence([code("39607008", "SCT", "Lung")])
    finding.Manufacturer = "Scanner of Sherlock Holmes"
    ds.ContentSequence = Sequence([finding])
    return ds


def test_local_codes_and_short_text_in_replaced_sequences_do_not_keep_their_values() -> None:
    """Content Sequence is D: a local scheme's code value and meaning are dummied, a
    standard code stays, short text is cleaned."""
    out = anonymize(with_sr_content(), RULES, KEYS)
    finding = out.ContentSequence[0]
    local = finding.ConceptNameCodeSequence[0]
    assert (local.CodeValue, local.CodeMeaning) == ("ANONYMIZED", "ANONYMIZED")
    standard = finding.ConceptCodeSequence[0]
    assert (standard.CodeValue, standard.CodeMeaning) == ("39607008", "Lung")
    assert finding.Manufacturer == "Scanner of *** ***"
    data = encode(out)
    assert b"Holmes" not in data and b"221B" not in data


def test_local_codes_in_cleaned_sequences_are_cleaned() -> None:
    """Under Clean Structured Content (Content Sequence C) they are cleaned instead."""
    out = anonymize(with_sr_content(), build_policy(["clean-structured-content"], None), KEYS)
    local = out.ContentSequence[0].ConceptNameCodeSequence[0]
    assert (local.CodeValue, local.CodeMeaning) == ("***", "*** ***")
    assert out.ContentSequence[0].ConceptCodeSequence[0].CodeMeaning == "Lung"
