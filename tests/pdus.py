"""Hand-made PDUs (PS3.8 section 9) and a seeded generator of broken ones, for fuzzing the receiver.

Everything is built with `struct` from the standard's layouts, so a PDU can be
cut, stretched or given a lying length field at any byte.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


def _uid_item(kind: int, uid: str) -> bytes:
    data = uid.encode()
    return struct.pack(">BBH", kind, 0, len(data)) + data


def associate_rq(
    called: bytes = b"DICOMFLOW",
    calling: bytes = b"FUZZER",
    contexts: tuple[tuple[str, tuple[str, ...]], ...] = (
        (VERIFICATION, (ImplicitVRLittleEndian,)),
        (CTImageStorage, (ExplicitVRLittleEndian,)),
    ),
    max_pdu: int = 16384,
    first_id: int = 1,
) -> bytes:
    """An A-ASSOCIATE-RQ: presentation context i gets id `first_id` + 2i."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
    body += _uid_item(0x10, APPLICATION_CONTEXT)
    for i, (abstract, syntaxes) in enumerate(contexts):
        sub = _uid_item(0x30, abstract) + b"".join(_uid_item(0x40, ts) for ts in syntaxes)
        body += struct.pack(">BBHBBBB", 0x20, 0, 4 + len(sub), first_id + 2 * i, 0, 0, 0) + sub
    implementation = _uid_item(0x52, "1.2.826.0.1.3680043.8.498.1")
    user = struct.pack(">BBHL", 0x51, 0, 4, max_pdu) + implementation
    body += struct.pack(">BBH", 0x50, 0, len(user)) + user
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def command(**elements: object) -> bytes:
    """A DIMSE command set (implicit VR little endian) with its group length first."""
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    raw = fp.getvalue()
    return struct.pack("<HHLL", 0, 0, 4, len(raw)) + raw


def p_data(context_id: int, header: int, data: bytes) -> bytes:
    """A P-DATA-TF with one PDV; `header` 3: last command fragment, 2: last dataset one."""
    pdv = struct.pack(">LBB", 2 + len(data), context_id, header) + data
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


ECHO_RQ = command(
    AffectedSOPClassUID=VERIFICATION, CommandField=0x0030, MessageID=1, CommandDataSetType=0x0101
)
RELEASE_RQ = struct.pack(">BBLL", 0x05, 0, 4, 0)
ABORT_RQ = struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0, 0)


def store_rq(message_id: int, instance: str = "1.2.826.0.1.3680043.8.498.2") -> bytes:
    return command(
        AffectedSOPClassUID=CTImageStorage,
        CommandField=0x0001,
        MessageID=message_id,
        Priority=0,
        CommandDataSetType=0x0000,
        AffectedSOPInstanceUID=instance,
    )


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Flip, cut, insert, or overwrite four bytes with a telling length."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        at = rng.randrange(len(out))
        op = rng.random()
        if op < 0.35:
            out[at] = rng.randrange(256)
        elif op < 0.5:
            del out[at : at + rng.randint(1, 16)]
        elif op < 0.65:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op < 0.9 and at + 4 <= len(out):
            lengths = (0, 1, 2, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(2**32))
            out[at : at + 4] = struct.pack(">L", rng.choice(lengths))
        else:
            del out[at:]
    return bytes(out)


Case = list[bytes]
"""What one connection sends, PDU by PDU (each waits briefly for an answer)."""


def _random_bytes(rng: random.Random) -> Case:
    return [rng.randbytes(rng.randint(0, 400))]


def _broken_associate(rng: random.Random) -> Case:
    return [mutate(rng, associate_rq())]


def _broken_p_data(rng: random.Random) -> Case:
    return [associate_rq(), mutate(rng, p_data(1, 3, ECHO_RQ))]


def _broken_command(rng: random.Random) -> Case:
    return [associate_rq(), p_data(1, 3, mutate(rng, ECHO_RQ))]


def _odd_command(rng: random.Random) -> Case:
    fields = {
        "AffectedSOPClassUID": rng.choice([CTImageStorage, VERIFICATION, "", "9", "1." * 40]),
        "CommandField": rng.choice([0x0001, 0x0030, 0x0020, 0x0021, 0x0FFF, 0x8001, 0xFFFF]),
        "MessageID": rng.randrange(65536),
        "CommandDataSetType": rng.choice([0x0101, 0x0000, 0x0001]),
        "AffectedSOPInstanceUID": rng.choice(["1.2.3", "", "x" * 70]),
    }
    if rng.random() < 0.3:
        del fields[rng.choice(list(fields))]
    data = [p_data(rng.choice([1, 3, 0, 255]), rng.choice([0, 1, 2, 3, 0xFF]), command(**fields))]
    data.append(p_data(3, rng.choice([0, 2]), rng.randbytes(rng.randint(0, 200))))
    return [associate_rq(), *data]


def _store_cut_short(rng: random.Random) -> Case:
    """A C-STORE whose dataset stops, or turns to noise, before its last fragment."""
    first = p_data(3, 0, b"\x08\x00\x18\x00UI\x06\x00" + b"1.2.3\0" + rng.randbytes(500))
    tail = [mutate(rng, p_data(3, 2, rng.randbytes(300)))] if rng.random() < 0.5 else []
    return [associate_rq(), p_data(3, 3, store_rq(rng.randrange(1, 65536))), first, *tail]


def _broken_release(rng: random.Random) -> Case:
    return [associate_rq(), mutate(rng, rng.choice([RELEASE_RQ, ABORT_RQ]))]


def _lying_length(rng: random.Random) -> Case:
    kind = rng.choice([0x01, 0x04, 0x05, 0x07])
    length = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 1 << 24])
    lead = [associate_rq()] if kind != 0x01 else []
    return [*lead, struct.pack(">BBL", kind, 0, length) + rng.randbytes(rng.randint(0, 2000))]


def _out_of_order(rng: random.Random) -> Case:
    ac = bytearray(associate_rq())
    ac[0] = 0x02  # an A-ASSOCIATE-AC sent to the acceptor
    choices = [
        [p_data(1, 3, ECHO_RQ)],  # data before any association
        [RELEASE_RQ],
        [bytes(ac)],
        [associate_rq(), associate_rq()],  # asked twice
        [associate_rq(), bytes(ac)],
        [associate_rq(), RELEASE_RQ, p_data(1, 3, ECHO_RQ)],
    ]
    return rng.choice(choices)


GENERATORS: tuple[Callable[[random.Random], Case], ...] = (
    _random_bytes,
    _broken_associate,
    _broken_p_data,
    _broken_command,
    _odd_command,
    _store_cut_short,
    _broken_release,
    _lying_length,
    _out_of_order,
)


def cases(seed: int, count: int) -> list[Case]:
    """`count` fuzz cases, the same ones for the same seed."""
    rng = random.Random(seed)
    return [GENERATORS[i % len(GENERATORS)](rng) for i in range(count)]
