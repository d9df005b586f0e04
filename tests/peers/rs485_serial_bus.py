"""An RS485 bus on a pseudo serial port: a pymodbus RTU serial server answering as the CHINT
DTSU666 image (unit 1) and the Eastron SDM630 image (unit 2) on the serial device given as the
first argument (one end of a `socat pty,raw,echo=0 pty,raw,echo=0` pair), 9600 8N1. Unit 3 is
a dead device: it never answers (its handler waits far beyond any client timeout), as on a bus
where that meter lost power.

Prints "READY" once the port is open, runs until stdin closes.
"""

import asyncio
import sys

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import SimDevice

import chint_dtsu666
import eastron_sdm630
from modbus_image import blocks, device


async def never_answers(*_args):
    await asyncio.sleep(3600)


async def main(path):
    devices = [
        device(1, shared=chint_dtsu666.regs),
        device(2, holding={0x000A: [0, 0]}, input_regs=eastron_sdm630.regs),
        SimDevice(id=3, simdata=blocks(chint_dtsu666.regs), action=never_answers),
    ]
    server = ModbusSerialServer(
        devices, port=path, framer=FramerType.RTU, baudrate=9600, bytesize=8, parity="N", stopbits=1
    )
    await server.serve_forever(background=True)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
