"""The archive step's shortcuts change no result: private elements dropped before they
are parsed, and durability paid once per batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.durable import SYNCFS_FROM, PendingSync, write_atomic
from tasks import phi_gate
from tasks.anonymize import anonymize
from tasks.archive import ArchiveBatch, archive_version, encode
from tasks.parse import read_landed
from tasks.policy import Policy, build_policy
from tasks.prune import drop_removed_private
from tasks.pseudonyms import Pseudonymizer
from tests.test_phi_leaks import corpus, quiet

KEYS = Pseudonymizer(b"shortcut-salt")


def archived_bytes(path: Path, policy: Policy, prune: bool) -> bytes | str:
    """What `tasks.ingest.archive_one` would write for `path`, or the error it would meet."""
    try:
        landed = read_landed(
            path,
            streaming=False,
            prune=(lambda ds: drop_removed_private(ds, policy)) if prune else None,
        )
        ds = landed.ds
        identity = phi_gate.originals(ds, policy.gate_keywords(phi_gate.IDENTIFYING_KEYWORDS))
        anonymize(ds, policy, KEYS, identity)
        return encode(ds)
    except Exception as exc:
        return type(exc).__name__


@pytest.mark.parametrize("options", [[], ["retain-safe-private"]])
def test_dropping_private_elements_first_gives_the_same_archive_copy(options: list[str]) -> None:
    quiet()
    policy = build_policy(options, None)
    files = corpus()
    assert len(files) > 50
    differ = [
        p.name for p in files if archived_bytes(p, policy, True) != archived_bytes(p, policy, False)
    ]
    assert not differ


def test_an_entry_whose_file_missed_the_disk_is_written_again(tmp_path: Path) -> None:
    """A crash before the batch's commit: the index entry is on disk, the bytes are not."""
    archive = tmp_path / "archive"
    relpath = Path("ANON-1", "1.2.3", "1.2.3.4", "1.2.3.4.5.dcm")
    batch = ArchiveBatch(archive)
    first = archive_version(archive, relpath, b"first bytes", "landed-a", batch)
    assert first.kind == "new"
    (archive / relpath).write_bytes(b"")  # what a power cut can leave of an unsynced file

    again = archive_version(archive, relpath, b"first bytes", "landed-a")
    assert (again.kind, again.version) == ("new", 1)
    assert (archive / relpath).read_bytes() == b"first bytes"
    # Now intact: the same bytes again are a duplicate, other bytes a new version.
    assert archive_version(archive, relpath, b"first bytes", "landed-b").kind == "duplicate"
    changed = archive_version(archive, relpath, b"other bytes", "landed-c")
    assert (changed.kind, changed.version) == ("version", 2)


def test_one_batch_flush_makes_every_file_visible_and_whole(tmp_path: Path) -> None:
    pending = PendingSync()
    paths = [tmp_path / f"s{i % 3}" / f"{i}.dcm" for i in range(SYNCFS_FROM + 8)]
    for index, path in enumerate(paths):
        write_atomic(path, b"x" * index, pending=pending)
    pending.flush()
    assert pending.files == [] and not pending.folders
    assert [p.stat().st_size for p in paths] == list(range(len(paths)))
    assert not [p for p in tmp_path.rglob("*.partial")]
