"""A transparent RS485 gateway (Modbus RTU frames inside TCP) with two meters on its bus:
the CHINT DTSU666 image of chint_dtsu666.py at unit 1 and the Eastron SDM630 image of
eastron_sdm630.py at unit 2, and a dead device at unit 3: it never answers (its handler waits
far beyond any client timeout), so a request to it times out as on a real bus.

Binds 127.0.0.1 port 0, prints "PORT <n>" once listening, runs until stdin closes.
"""

import asyncio
import sys

from pymodbus import FramerType
from pymodbus.server import ModbusTcpServer

import chint_dtsu666
import eastron_sdm630
from pymodbus.simulator import SimDevice

from modbus_image import blocks, device


async def never_answers(*_args):
    await asyncio.sleep(3600)


async def main():
    devices = [
        device(1, shared=chint_dtsu666.regs),
        device(2, holding={0x000A: [0, 0]}, input_regs=eastron_sdm630.regs),
        SimDevice(id=3, simdata=blocks(chint_dtsu666.regs), action=never_answers),
    ]
    server = ModbusTcpServer(devices, address=("127.0.0.1", 0), framer=FramerType.RTU)
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
