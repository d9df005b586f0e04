"""A SunSpec PV inverter served by pymodbus (a third-party Modbus TCP server) for the ignored
peer test in tests/devices.rs.

Image at base 50000, device id 1, model order 1, 123, 113 (float32), 120:
  113 W = 4321.5 W, WH = 765432.0 Wh, St = 4 (MPPT)
  120 WRtg = 60 x 10^2 = 6000 W
  123 WMaxLimPct_SF = -2, limit disabled
Offsets are those of the pysunspec2 model JSON (counted from the model ID register).

Binds port 0 and prints "PORT <n>" once listening; runs until stdin closes.
"""

import asyncio
import struct
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

BASE = 50000


def model(mid, length, points):
    regs = [0] * (length + 2)
    regs[0], regs[1] = mid, length
    for off, val in points.items():
        regs[off] = val & 0xFFFF
    return regs


def f32(val):
    hi, lo = struct.unpack(">HH", struct.pack(">f", val))
    return hi, lo


def common():
    regs = model(1, 66, {})
    text = b"pymodbus-peer".ljust(32, b"\0")
    for i in range(16):
        regs[2 + i] = (text[2 * i] << 8) | text[2 * i + 1]
    return regs


def inverter_113():
    regs = model(113, 60, {48: 4})
    regs[22], regs[23] = f32(4321.5)
    regs[24], regs[25] = f32(50.01)
    regs[32], regs[33] = f32(765432.0)
    regs[38], regs[39] = f32(4400.0)
    return regs


def image():
    regs = [0x5375, 0x6E53]
    regs += common()
    regs += model(123, 24, {5: 10000, 9: 0, 23: -2})
    regs += inverter_113()
    regs += model(120, 26, {2: 4, 3: 60, 4: 2})
    regs += [0xFFFF, 0]
    return regs


async def main():
    device = SimDevice(
        id=1,
        simdata=[SimData(address=BASE, values=image(), datatype=DataType.REGISTERS)],
    )
    server = ModbusTcpServer(device, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
