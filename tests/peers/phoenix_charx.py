"""Phoenix Contact CHARX SEC-3xxx image, written from the controller's Modbus/TCP server table
(as evcc's phoenix-charx driver reads it): global registers, then per connector n registers at
n * 1000 + offset; holding and input registers return the same values.

Globals: 100 device name (10 registers), 114 number of charging controllers = 1.
Connector 1 (offsets): 232/234/236 voltages int32 mV, 238/240/242 currents int32 mA, 244 power
int32 mW, 250 energy int64 Wh, 299 IEC 61851-1 state letter (high byte), 300 enable, 301 max
current uint16 A.

Example: a car charging (state "C") at 16 A on three phases, 230.5/231.0/229.8 V,
11.05 kW, 123456 Wh delivered, max current 16 A. Unit 1.
"""

from modbus_image import device, i32, serve, text


def connector(n, offset):
    return n * 1000 + offset


def i64(value):
    value &= 0xFFFFFFFFFFFFFFFF
    return [(value >> shift) & 0xFFFF for shift in (48, 32, 16, 0)]


regs = {a: [0] for a in range(100, 120)}
regs[100] = text("CHARX SEC-3100", 10)
for a in range(101, 110):
    del regs[a]
regs[114] = [1]
base = {a: [0] for a in range(connector(1, 200), connector(1, 310))}
regs.update(base)
for i, millivolts in enumerate([230500, 231000, 229800]):
    hi, lo = i32(millivolts)
    regs[connector(1, 232 + 2 * i)], regs[connector(1, 233 + 2 * i)] = [hi], [lo]
for i, milliamps in enumerate([16020, 15980, 16010]):
    hi, lo = i32(milliamps)
    regs[connector(1, 238 + 2 * i)], regs[connector(1, 239 + 2 * i)] = [hi], [lo]
hi, lo = i32(11050000)
regs[connector(1, 244)], regs[connector(1, 245)] = [hi], [lo]
for i, word in enumerate(i64(123456)):
    regs[connector(1, 250 + i)] = [word]
regs[connector(1, 299)] = [ord("C") << 8]
regs[connector(1, 300)] = [1]
regs[connector(1, 301)] = [16]

if __name__ == "__main__":
    serve(device(1, shared=regs))
