"""A Storage SCU: send DICOM files to a peer, one association per group of files.

Used by the demo and the tests to feed a receiver over the network, exactly as a
modality or PACS would: no C-ECHO first and no second try, so every refusal shows.
Sending from the archive to a configured node is `receiver.send`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE

from receiver import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from receiver.send import MAX_CONTEXTS, header_key
from receiver.send import Sent as SendResult


def send_files(
    paths: Iterable[Path],
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "DICOMFLOW_SCU",
) -> list[SendResult]:
    """C-STORE each file in its own transfer syntax over one association.

    Proposes one presentation context per (SOP class, transfer syntax) pair found
    in the files, so nothing is transcoded on the way.
    """
    results: list[SendResult] = []
    datasets: list[tuple[Path, Dataset]] = []
    for path in paths:
        try:
            ds: Dataset = dcmread(path)
            header_key(ds)
        except Exception as exc:  # unreadable here means unsendable: say so
            results.append(SendResult(path, None, f"not sendable: {type(exc).__name__}: {exc}"))
            continue
        datasets.append((path, ds))
    keys = sorted({header_key(ds) for _, ds in datasets})
    if not keys:
        return results
    if len(keys) > MAX_CONTEXTS:
        raise ValueError(f"{len(keys)} presentation contexts needed, at most {MAX_CONTEXTS}")
    ae = AE(ae_title=calling_ae)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    for sop_class, syntax in keys:
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        why = "association rejected" if assoc.is_rejected else "association failed"
        return results + [SendResult(p, None, why) for p, _ in datasets]
    try:
        for path, ds in datasets:
            try:
                reply = assoc.send_c_store(ds)
            except Exception as exc:
                results.append(SendResult(path, None, f"{type(exc).__name__}: {exc}"))
                continue
            status = int(reply.Status) if "Status" in reply else None
            results.append(SendResult(path, status, None if status is not None else "no response"))
    finally:
        if assoc.is_established:
            assoc.release()
    return results
