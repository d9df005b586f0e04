"""Eastron SDM630-Modbus image, written from the SDM630 Modbus protocol document.

Input registers (function 4, "3X" numbering: address = register - 30001), float32 high word
first: 30001/3/5 phase voltages V, 30007/9/11 currents A, 30013/15/17 phase powers W, 30053
total system power W, 30071 frequency Hz, 30073 import kWh, 30075 export kWh. Function 3 holds
the setup registers (not served here, so a profile reading measurements with function 3 fails).

Example state: 231.2/230.4/229.9 V, export of 2.5 kW (-800, -900, -800 W), 49.98 Hz,
5210.25 kWh imported, 1042.5 kWh exported. Unit 1.
"""

from modbus_image import device, f32, serve

measurements = {
    30001: 231.2, 30003: 230.4, 30005: 229.9,
    30007: 3.46, 30009: 3.91, 30011: 3.48,
    30013: -800.0, 30015: -900.0, 30017: -800.0,
    30053: -2500.0,
    30071: 49.98,
    30073: 5210.25, 30075: 1042.5,
}
regs = {a: [0] for a in range(0, 0x50)}
for register, value in measurements.items():
    address = register - 30001
    hi, lo = f32(value)
    regs[address], regs[address + 1] = [hi], [lo]

if __name__ == "__main__":
    serve(device(1, holding={0x000A: [0, 0]}, input_regs=regs))
