"""Huawei SUN2000 image, written from "Solar Inverter Modbus Interface Definitions" (Issue 5).

Holding registers, big-endian, unit 1:
  30000 model, STR 15 regs           "SUN2000-10KTL-M1"
  30073 rated power Pn, U32, W        10000
  32064 input power, I32, W           7400
  32080 active power, I32, W          7123
  32085 grid frequency, U16, gain 100 50.02 Hz -> 5002
  32089 device status, U16            0x0200 on-grid
  32106 accumulated yield, U32, gain 100 kWh: 23456.78 kWh -> 2345678
  40125 active power percentage derating, RW, gain 10 %: 100.0 % -> 1000
"""

from modbus_image import device, i32, serve, text, u32

regs = {
    30000: text("SUN2000-10KTL-M1", 15),
    30073: u32(10000),
    32064: i32(7400),
    32080: i32(7123),
    32085: [5002],
    32089: [0x0200],
    32106: u32(2345678),
    40125: [1000],
}

if __name__ == "__main__":
    serve(device(1, shared=regs))
