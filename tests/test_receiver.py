"""The Storage SCP against real peers: dcmtk's echoscu/storescu/findscu and pynetdicom."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, ModalityWorklistInformationFind
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from receiver import IMPLEMENTATION_CLASS_UID
from receiver.landing import LandingZone
from receiver.scp import OUT_OF_RESOURCES, Receiver
from receiver.settings import ReceiverSettings
from receiver.storescu import send_files
from tests.conftest import run_dcmtk


def landed(receiver_dir: Path) -> list[Path]:
    return LandingZone(receiver_dir).completed()


def test_echoscu_gets_success(receiver: Receiver) -> None:
    result = run_dcmtk("echoscu", "-aec", "DICOMFLOW", "127.0.0.1", str(receiver.port))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("option", "name", "syntax"),
    [
        ("-xi", "CT_small.dcm", ImplicitVRLittleEndian),  # converted by storescu to implicit
        ("-xe", "CT_small.dcm", ExplicitVRLittleEndian),
        ("-xb", "MR_small_bigendian.dcm", ExplicitVRBigEndian),
    ],
)
def test_storescu_uncompressed_syntaxes_land_as_negotiated(
    receiver: Receiver, settings, option: str, name: str, syntax: str
) -> None:
    source = get_testdata_file(name)
    result = run_dcmtk(
        "storescu", option, "-aec", "DICOMFLOW", "127.0.0.1", str(receiver.port), source
    )
    assert result.returncode == 0, result.stderr
    files = landed(settings.landing)
    assert len(files) == 1
    ds = dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == syntax
    original = dcmread(source)
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert ds.PatientName == original.PatientName
    assert ds.pixel_array.tobytes() == original.pixel_array.tobytes()


@pytest.mark.parametrize(
    ("option", "name"),
    [
        ("-xy", "SC_rgb_jpeg_dcmtk.dcm"),
        ("-xs", "SC_rgb_jpeg_gdcm.dcm"),
        ("-xr", "MR_small_RLE.dcm"),
    ],
)
def test_storescu_compressed_is_stored_as_received(
    receiver: Receiver, settings, option: str, name: str
) -> None:
    source = Path(get_testdata_file(name))
    result = run_dcmtk(
        "storescu", option, "-aec", "DICOMFLOW", "127.0.0.1", str(receiver.port), str(source)
    )
    assert result.returncode == 0, result.stderr
    (path,) = landed(settings.landing)
    stored, original = dcmread(path), dcmread(source)
    assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert stored.PixelData == original.PixelData  # the compressed bytes, untouched


def test_landed_file_has_our_meta_and_receipt(receiver: Receiver, settings, caplog) -> None:
    caplog.set_level(logging.INFO, logger="dicomflow.receipts")
    sources = [Path(get_testdata_file(n)) for n in ("MR_small.dcm", "CT_small.dcm")]
    for _ in range(2):  # two associations
        results = send_files(sources, "127.0.0.1", receiver.port, "DICOMFLOW")
        assert [r.status for r in results] == [0x0000, 0x0000]
    path = landed(settings.landing)[0]
    ds = dcmread(path)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    receipts = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "dicomflow.receipts"
    ]
    assert len(receipts) == 4
    ids = [r["association_id"] for r in receipts]
    assert ids[0] == ids[1] != ids[2] == ids[3]
    receipt = receipts[0]
    assert receipt["calling_ae"] == "DICOMFLOW_SCU"
    assert receipt["sop_instance"] == ds.SOPInstanceUID
    assert receipt["landing_path"] == str(path)
    assert receipt["bytes"] == path.stat().st_size
    assert receipt["transfer_syntax"] == ExplicitVRLittleEndian
    assert receipt["status"] == "0x0000"
    assert receipt["move_originator_ae"] is None  # not sent for anyone's C-MOVE


def test_same_instance_twice_lands_twice(receiver: Receiver, settings) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))
    for _ in range(2):
        assert send_files([source], "127.0.0.1", receiver.port, "DICOMFLOW")[0].ok
    files = landed(settings.landing)
    assert len(files) == 2
    assert {dcmread(p).SOPInstanceUID for p in files} == {dcmread(source).SOPInstanceUID}


def test_two_concurrent_senders(receiver: Receiver, settings) -> None:
    sources = [Path(get_testdata_file(n)) for n in ("CT_small.dcm", "MR_small.dcm")]
    results: list = []

    def send(path: Path) -> None:
        result = run_dcmtk(
            "storescu",
            "--repeat",
            "10",
            "-aec",
            "DICOMFLOW",
            "127.0.0.1",
            str(receiver.port),
            str(path),
        )
        results.append(result)

    threads = [threading.Thread(target=send, args=(p,)) for p in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert len(landed(settings.landing)) == 20
    assert receiver.counter.stored == 20


def test_worklist_find_is_rejected_in_negotiation(receiver: Receiver, caplog) -> None:
    caplog.set_level(logging.INFO, logger="dicomflow.receiver")
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="DICOMFLOW")
    try:
        assert assoc.is_established
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        assert CTImageStorage in accepted
        assert ModalityWorklistInformationFind not in accepted
        assert len(assoc.rejected_contexts) == 1
    finally:
        assoc.release()
    assert "refused from PROBE: Modality Worklist Information Model - FIND" in caplog.text


def test_findscu_worklist_gets_no_service(receiver: Receiver) -> None:
    result = run_dcmtk(
        "findscu", "-W", "-k", "PatientName=", "-aec", "DICOMFLOW", "127.0.0.1", str(receiver.port)
    )
    assert result.returncode != 0
    assert (
        "No Acceptable Presentation Contexts" in result.stderr
        or "rejected" in result.stderr.lower()
    )


def test_private_sop_class_is_accepted_and_stored(receiver: Receiver, settings) -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    private_class = "1.2.826.0.1.3680043.8.498.9999.1"
    ds.SOPClassUID = private_class
    ds.file_meta.MediaStorageSOPClassUID = private_class
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(private_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="DICOMFLOW")
    try:
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    (path,) = landed(settings.landing)
    assert dcmread(path).SOPClassUID == private_class


def test_failed_landing_write_answers_out_of_resources(
    receiver: Receiver, settings, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="dicomflow.receipts")
    shutil.rmtree(settings.landing)
    settings.landing.write_text("not a folder")  # every write into it now fails
    result = send_files(
        [Path(get_testdata_file("CT_small.dcm"))], "127.0.0.1", receiver.port, "DICOMFLOW"
    )
    assert result[0].status == OUT_OF_RESOURCES
    assert STORAGE_SERVICE_CLASS_STATUS[OUT_OF_RESOURCES][1] == "Refused: Out of Resources"
    assert receiver.counter.failed == 1 and receiver.counter.stored == 0
    (receipt,) = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "dicomflow.receipts"
    ]
    assert receipt["status"] == "0xA700" and receipt["landing_path"] is None


def test_association_reports_our_implementation_uid(receiver: Receiver) -> None:
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="DICOMFLOW")
    try:
        assert assoc.acceptor.implementation_class_uid == IMPLEMENTATION_CLASS_UID
        assert assoc.acceptor.maximum_length == 65536
    finally:
        assoc.release()


def test_accepted_sockets_have_tcp_nodelay(settings) -> None:
    import socket

    from receiver.scp import make_server

    scp = make_server(ReceiverSettings(port=0), settings.landing)  # bound, not serving
    try:
        with socket.create_connection(("127.0.0.1", scp.port), timeout=5):
            accepted, _ = scp.server.get_request()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        scp.server.server_close()


def test_stop_does_not_wait_for_a_connection_that_never_associated(settings) -> None:
    import socket
    import time

    from receiver.scp import start_receiver

    scp = start_receiver(ReceiverSettings(port=0, acse_timeout=30), settings.landing)
    probe = socket.create_connection(("127.0.0.1", scp.port), timeout=5)  # a port check
    try:
        time.sleep(0.3)
        started = time.monotonic()
        scp.stop(grace_seconds=10)
        assert time.monotonic() - started < 5
    finally:
        probe.close()


def test_wrong_called_ae_title_is_rejected(receiver: Receiver) -> None:
    result = run_dcmtk("echoscu", "-aec", "SOMEONE_ELSE", "127.0.0.1", str(receiver.port))
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stderr
    assert (
        run_dcmtk("echoscu", "-aec", "DICOMFLOW", "127.0.0.1", str(receiver.port)).returncode == 0
    )


@pytest.mark.parametrize(
    ("uid", "name"),
    [
        ("1.2.840.10008.5.1.4.1.1.5", "NM Image Storage (retired)"),
        ("1.2.840.10008.5.1.4.1.1.6", "US Image Storage (retired)"),
        ("1.2.840.10008.5.1.4.1.1.3", "US Multi-frame Image Storage (retired)"),
    ],
)
def test_retired_image_storage_classes_are_stored(
    receiver: Receiver, settings, uid: str, name: str
) -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(uid, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="DICOMFLOW")
    try:
        assert assoc.is_established, name
        assert assoc.send_c_store(ds).Status == 0x0000, name
    finally:
        assoc.release()
    (path,) = landed(settings.landing)
    assert dcmread(path).SOPClassUID == uid


def test_malformed_abstract_syntax_does_not_spoil_the_association(receiver: Receiver) -> None:
    ae = AE(ae_title="PROBE")
    ae.add_requested_context("1.2.826.0.1.3680043.8.498.77.1", ExplicitVRLittleEndian)
    ae.add_requested_context(CTImageStorage)
    import pynetdicom.presentation as presentation

    bad = presentation.PresentationContext()
    bad.abstract_syntax = "1.2.3-4"  # not a UID; pynetdicom lets it through with a warning
    bad.add_transfer_syntax(ExplicitVRLittleEndian)
    ae._requested_contexts.append(bad)  # add_requested_context() would refuse it
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="DICOMFLOW")
    try:
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert {"1.2.826.0.1.3680043.8.498.77.1", CTImageStorage} <= accepted
    finally:
        assoc.release()
    result = run_dcmtk("echoscu", "-aec", "DICOMFLOW", "127.0.0.1", str(receiver.port))
    assert result.returncode == 0


def test_connections_that_hang_up_early_do_not_hold_slots(receiver: Receiver) -> None:
    """Port checks and dropped connects must not lock senders out (4 slots here)."""
    import socket
    import time

    for _ in range(12):
        socket.create_connection(("127.0.0.1", receiver.port), timeout=5).close()
    time.sleep(0.5)
    result = run_dcmtk("echoscu", "-aec", "DICOMFLOW", "127.0.0.1", str(receiver.port))
    assert result.returncode == 0, result.stderr


def test_a_malformed_c_store_is_refused_alone(receiver: Receiver, settings, caplog) -> None:
    """dcmsend misreads this sample and sends a command naming SOP class '31'.

    That request gets a failure status; the association, and the file after it, go on.
    """
    caplog.set_level(logging.INFO, logger="dicomflow.receipts")
    broken = get_testdata_file("rtdose_rle_1frame.dcm")
    result = run_dcmtk(
        "dcmsend",
        "-nh",
        "-aec",
        "DICOMFLOW",
        "127.0.0.1",
        str(receiver.port),
        broken,
        get_testdata_file("CT_small.dcm"),
    )
    assert result.returncode == 0, result.stderr
    (path,) = landed(settings.landing)
    assert dcmread(path).SOPClassUID == CTImageStorage
    statuses = [
        json.loads(r.getMessage())["status"]
        for r in caplog.records
        if r.name == "dicomflow.receipts"
    ]
    assert statuses == ["0x0122", "0x0000"]
