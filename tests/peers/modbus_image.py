"""Helpers for the hand-written device images in this directory: pack values the way a vendor
document describes them and serve the registers with pymodbus (a third-party Modbus server).

Each image script lists its registers by the vendor's own numbering and example values; none
of them reads the controller's profiles, so a wrong address, type, word order or scale in a
profile fails a test instead of hiding on both sides.

Binds 127.0.0.1 port 0, prints "PORT <n>" once listening, runs until stdin closes.
"""

import asyncio
import struct
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def f32(value):
    """IEEE 754 float32, high word first."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def u32(value, low_first=False):
    words = [(value >> 16) & 0xFFFF, value & 0xFFFF]
    return words[::-1] if low_first else words


def i32(value, low_first=False):
    return u32(value & 0xFFFFFFFF, low_first)


def text(value, registers):
    raw = value.encode("ascii").ljust(2 * registers, b"\0")
    return [(raw[2 * i] << 8) | raw[2 * i + 1] for i in range(registers)]


def block(address, words):
    return SimData(address=address, values=list(words), datatype=DataType.REGISTERS)


def blocks(regs):
    """SimData blocks from {address: [words]}, merging runs that touch."""
    out = []
    for address in sorted(regs):
        words = regs[address]
        if out and out[-1][0] + len(out[-1][1]) == address:
            out[-1][1].extend(words)
        else:
            out.append((address, list(words)))
    return [block(a, w) for a, w in out]


def _bits():
    return [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)]


def device(unit, holding=None, input_regs=None, shared=None):
    """A device answering function 3 from `holding` and function 4 from `input_regs`
    (separate register spaces), or both from `shared`."""
    if shared is not None:
        return SimDevice(id=unit, simdata=blocks(shared))
    return SimDevice(
        id=unit,
        simdata=(
            _bits(),
            _bits(),
            blocks(holding or {0xFFF0: [0]}),
            blocks(input_regs or {0xFFF0: [0]}),
        ),
    )


async def _serve(dev):
    server = ModbusTcpServer(dev, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.shutdown()


def serve(dev):
    asyncio.run(_serve(dev))
