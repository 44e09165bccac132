"""A pynetdicom Storage SCP that stores nothing: the ceiling of pynetdicom itself.

It accepts every storage SOP class in every transfer syntax pydicom knows, answers
each C-STORE with Success at once, and keeps nothing. Beside dicomflow in
`bench/receive.py` it shows how much of the time pynetdicom's own association,
PDU and DIMSE handling takes on this machine, before anything is written.

    .venv/bin/python bench/null_scp.py PORT
"""

from __future__ import annotations

import signal
import sys
import threading

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event


def handle_store(event: Event) -> int:
    """Success without decoding or keeping the dataset."""
    return 0x0000


def main(argv: list[str]) -> int:
    port = int(argv[0])
    ae = AE(ae_title="NULLSCP")
    ae.maximum_pdu_size = 65536  # what dicomflow's receiver proposes by default
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, list(AllTransferSyntaxes))
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
