"""Acrel ADW300 image, written from the meter's Modbus address table (holding registers,
protocol addresses, as evcc's acrel-adw300 template reads them). Unit 1.

  20, 21, 22   phase voltages A/B/C, unsigned 16 bit, 0.1 V      2302, 2297, 2311
  26, 27, 28   phase currents, unsigned 16 bit, 0.01 A           1234, 1180, 1302
  30, 32, 34   phase active powers, signed 32 bit, W              2800, 2650, -150
  36           total active power, signed 32 bit, W (import > 0)  5300
  62           forward active energy, signed 32 bit, 0.01 kWh    1234567 (12345.67 kWh)
  64           reverse active energy, signed 32 bit, 0.01 kWh    98765 (987.65 kWh)

The rest of the 0..70 range reads zero, as on the meter.
"""

from modbus_image import device, i32, serve

regs = {a: [0] for a in range(0, 70)}
for address, value in {20: 2302, 21: 2297, 22: 2311, 26: 1234, 27: 1180, 28: 1302}.items():
    regs[address] = [value]
for address, value in {30: 2800, 32: 2650, 34: -150, 36: 5300, 62: 1234567, 64: 98765}.items():
    hi, lo = i32(value)
    regs[address], regs[address + 1] = [hi], [lo]

if __name__ == "__main__":
    serve(device(1, shared=regs))
