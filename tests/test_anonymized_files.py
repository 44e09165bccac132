"""Anonymized files are still good DICOM: dcmtk and pydicom read them, pixels unchanged,
and UIDs hold together across batches, runs and references."""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tasks.anonymize import anonymize
from tasks.archive import encode
from tasks.ingest import IngestContext, archive_files
from tasks.parse import read_instance
from tasks.policy import build_policy
from tasks.pseudonyms import Pseudonymizer
from tests.test_phi_leaks import corpus, quiet

KEYS = Pseudonymizer(b"round-trip-salt")
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def test_every_corpus_file_round_trips_through_dcmdump(tmp_path: Path) -> None:
    """dcmtk's dcmdump reads each anonymized file without an error; pixels are identical."""
    if shutil.which("dcmdump") is None:
        pytest.fail("dcmdump missing: run .ci/run to install dcmtk")
    quiet()
    policy = build_policy([], None)
    out = tmp_path / "out"
    out.mkdir()
    pixels = {}
    for n, path in enumerate(corpus()):
        original = read_instance(path)
        pixels[n] = [original.get(k) for k in PIXEL_KEYWORDS]
        (out / f"{n}.dcm").write_bytes(encode(anonymize(original, policy, KEYS)))
    files = sorted(out.iterdir(), key=lambda p: int(p.stem))
    complaints = []
    for chunk in range(0, len(files), 50):
        batch = [str(p) for p in files[chunk : chunk + 50]]
        result = subprocess.run(
            ["dcmdump", *batch], capture_output=True, text=True, errors="replace"
        )
        errors = [line for line in result.stderr.splitlines() if line.startswith(("E:", "F:"))]
        if result.returncode != 0 or errors:
            complaints.append((batch[0], result.returncode, errors[:3]))
    assert not complaints, complaints
    for path in files:
        reread = dcmread(path)
        assert reread.PatientIdentityRemoved == "YES"
        assert [reread.get(k) for k in PIXEL_KEYWORDS] == pixels[int(path.stem)], path.name


def land(folder: Path, ds: Dataset, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / name, enforce_file_format=True)
    return folder / name


def archived(ctx: IngestContext) -> dict[str, Dataset]:
    return {p.stem: dcmread(p) for p in ctx.archive_dir.rglob("*.dcm")}


def test_uids_consistent_across_batches_runs_and_references(
    ctx: IngestContext, tmp_path: Path
) -> None:
    """Two instances of one study in two runs, and a presentation state that references one."""
    first = dcmread(get_testdata_file("CT_small.dcm"))
    second = dcmread(get_testdata_file("CT_small.dcm"))
    second.SOPInstanceUID = generate_uid()
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    state = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    state.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State
    state.SOPInstanceUID = generate_uid()
    state.SeriesInstanceUID = generate_uid()
    state.Modality = "PR"
    image = Dataset()
    image.ReferencedSOPClassUID = first.SOPClassUID
    image.ReferencedSOPInstanceUID = first.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ReferencedImageSequence = Sequence([image])
    state.ReferencedSeriesSequence = Sequence([series])
    landing = tmp_path / "landing"
    archive_files([land(landing, first, "a.dcm")], ctx)
    later = dataclasses.replace(ctx, run_id="run-2")  # another run, another batch
    archive_files([land(landing, second, "b.dcm"), land(landing, state, "c.dcm")], later)
    out = archived(ctx)
    assert len(out) == 3
    new_first = out[KEYS_FOR(ctx).uid(first.SOPInstanceUID)]
    new_second = out[KEYS_FOR(ctx).uid(second.SOPInstanceUID)]
    new_state = out[KEYS_FOR(ctx).uid(state.SOPInstanceUID)]
    assert new_first.StudyInstanceUID == new_second.StudyInstanceUID == new_state.StudyInstanceUID
    assert new_first.StudyInstanceUID != first.StudyInstanceUID
    ref_series = new_state.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == new_first.SeriesInstanceUID
    assert (
        ref_series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_first.SOPInstanceUID
    )
    assert ref_series.ReferencedImageSequence[0].ReferencedSOPClassUID == first.SOPClassUID
    for ds in out.values():
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def KEYS_FOR(ctx: IngestContext) -> Pseudonymizer:
    return Pseudonymizer(ctx.salt)


def test_audit_sequences_and_overlays_go(tmp_path: Path) -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    earlier = Dataset()
    earlier.PatientName = "Earlier^Name"
    earlier.PatientID = "OLD-ID-123"
    audit = Dataset()
    audit.ModifiedAttributesSequence = Sequence([earlier])
    audit.AttributeModificationDateTime = "20200101120000"
    ds.OriginalAttributesSequence = Sequence([audit])
    ds.add_new(0x60003000, "OW", b"\x00\xff" * 8)  # overlay data
    ds.add_new(0x60004000, "LT", "overlay note by Dr Earlier")  # overlay comments
    ds.add_new(0x50000005, "US", 2)  # curve dimensions (retired curve module)
    data = encode(anonymize(ds, build_policy([], None), KEYS))
    for secret in (b"Earlier", b"OLD-ID-123", b"overlay note", b"\x00\xff\x00\xff"):
        assert secret not in data
    out = dcmread(io.BytesIO(data))
    assert "OriginalAttributesSequence" not in out
    assert not [
        e
        for e in out
        if e.tag.group in (0x5000, 0x6000) and e.tag.element in (0x3000, 0x4000, 0x0005)
    ]


CHARSET_FILES = [
    "chrArab.dcm",  # ISO_IR 127
    "chrFrenMulti.dcm",  # ISO_IR 100
    "chrGerm.dcm",  # ISO_IR 100
    "chrGreek.dcm",  # ISO_IR 126
    "chrH31.dcm",  # ISO 2022 IR 87
    "chrH32.dcm",  # ISO 2022 IR 13 + IR 87
    "chrHbrw.dcm",  # ISO_IR 138
    "chrI2.dcm",  # ISO 2022 IR 149
    "chrRuss.dcm",  # ISO_IR 144
    "chrX1.dcm",  # ISO_IR 192
    "chrX2.dcm",  # GB18030
]


@pytest.mark.parametrize("name", CHARSET_FILES)
def test_character_sets_are_honoured(name: str) -> None:
    """A descriptor holding the patient's name in the file's own character set is cleaned
    of it, the rest of the text kept, and the file re-reads in its character set."""
    (path,) = get_charset_files(name)
    ds = dcmread(path)
    charset = ds.SpecificCharacterSet
    parts = [p for p in re.split(r"[=^ ]", str(ds.PatientName)) if len(p) >= 2]
    parts = [p for p in parts if len(p) >= 3 or ord(max(p)) >= 0x2E80]
    assert parts, ds.PatientName
    ds.StudyDescription = f"Study of {' '.join(parts)} today"[:64]
    policy = build_policy(["clean-descriptors"], None)
    data = encode(anonymize(ds, policy, KEYS))
    out = dcmread(io.BytesIO(data))
    assert out.SpecificCharacterSet == charset
    description = str(out.StudyDescription)
    assert description.startswith("Study of ") and description.endswith(" today"), description
    for part in parts:
        assert part not in description and part not in str(out.PatientName), part
        assert part.encode("utf-8") not in data or charset != "ISO_IR 192"
