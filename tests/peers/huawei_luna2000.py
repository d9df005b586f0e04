"""Huawei SUN2000 inverter with a LUNA2000 battery, written from Huawei's "Solar Inverter
Modbus Interface Definitions" (energy storage registers). Holding registers, unit 1, 32-bit
values high word first.

  30000   model, STR 15 regs                    "SUN2000-10KTL-M1"
  37046   maximum charge power, U32 W           5000
  37048   maximum discharge power, U32 W        4500
  37758   rated capacity, U32 Wh                15000
  37760   state of capacity, U16, gain 10       654 (65.4 %)
  37762   running status, U16                   2 (running)
  37763   bus voltage, U16, gain 10             4521 (452.1 V)
  37765   charge/discharge power, I32 W         -2500 (discharging 2.5 kW; > 0 is charging)
  47000   storage unit 1 product model, U16     2 (HUAWEI LUNA2000)
  47083   forced charging/discharging period, U16 min   (writable)
  47100   forcible charge/discharge, U16: 0 stop, 1 charge, 2 discharge (writable)
  47246   forcible setting mode, U16: 0 time, 1 SoC    (writable)
  47247   forcible charge power, U32 W          (writable)
  47249   forcible discharge power, U32 W       (writable)
"""

from modbus_image import device, i32, serve, text, u32

regs = {}


def put(address, words):
    """One register per key, so multi-register values keep their place."""
    for i, w in enumerate(words):
        regs[address + i] = [w]


for a in list(range(30000, 30015)) + list(range(37046, 37050)) + list(range(37758, 37767)):
    regs[a] = [0]
for a in list(range(47000, 47110)) + list(range(47246, 47251)):
    regs[a] = [0]
put(30000, text("SUN2000-10KTL-M1", 15))
put(37046, u32(5000))
put(37048, u32(4500))
put(37758, u32(15000))
put(37760, [654])
put(37762, [2])
put(37763, [4521])
put(37765, i32(-2500))
put(47000, [2])

if __name__ == "__main__":
    serve(device(1, shared=regs))
