"""An Acrel meter with the other common map (the ADL400 family and some ADW300 firmware):
IEEE 754 float32 values, high word first, in holding registers from 14 on, powers in kW.

  14, 16, 18   phase voltages, V           230.2, 229.7, 231.1
  20           frequency, Hz               50.0
  22, 24, 26   phase currents, A           12.34, 11.80, 13.02
  28           total active power, kW      5.3
  30, 32, 34   phase active powers, kW     2.8, 2.65, -0.15

The ADW300 profile must refuse it: register 20 holds the high word of a float (0x4248 for
50.0 Hz, 1696.8 "V" in 0.1 V) and register 26 the high word of 13.02 (0x4150, 167.2 "A"
in 0.01 A is plausible, so the voltage check is the one that decides). Unit 1.
"""

from modbus_image import device, f32, serve

regs = {a: [0] for a in range(0, 70)}
values = {14: 230.2, 16: 229.7, 18: 231.1, 20: 50.0, 22: 12.34, 24: 11.80, 26: 13.02,
          28: 5.3, 30: 2.8, 32: 2.65, 34: -0.15}
for address, value in values.items():
    hi, lo = f32(value)
    regs[address], regs[address + 1] = [hi], [lo]

if __name__ == "__main__":
    serve(device(1, shared=regs))
