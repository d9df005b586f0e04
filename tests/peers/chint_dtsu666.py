"""CHINT DTSU666 image, written from the DTSU666 user manual's communication address table.

The manual lists the 0x2000 block as float32 values with implied units: Uab..Uca, Ua..Uc in
0.1 V, Ia..Ic in 0.001 A, Pt/Pa/Pb/Pc in 0.1 W, Qt.. in 0.1 var, PFt.. in 0.001, Freq (0x2044)
in 0.01 Hz; the 0x4000 block holds energies in kWh (ImpEp 0x401E, ExpEp 0x4028). The meter
answers function 3 and 4 on the same registers.

Example state: 230.1/229.8/231.0 V, 4.321 kW import (1.5 + 1.2 + 1.621 kW), 50.01 Hz,
12345.6 kWh imported, 789.0 kWh exported. Unit 1.
"""

from modbus_image import device, f32, serve

regs = {a: [0] for a in range(0x2000, 0x2046)}
values = {
    0x2000: 3985.0, 0x2002: 3990.0, 0x2004: 3988.0,   # Uab, Ubc, Uca (0.1 V)
    0x2006: 2301.0, 0x2008: 2298.0, 0x200A: 2310.0,   # Ua, Ub, Uc (0.1 V)
    0x200C: 6520.0, 0x200E: 5220.0, 0x2010: 7020.0,   # Ia, Ib, Ic (0.001 A)
    0x2012: 43210.0,                                   # Pt (0.1 W)
    0x2014: 15000.0, 0x2016: 12000.0, 0x2018: 16210.0,  # Pa, Pb, Pc (0.1 W)
    0x202A: 990.0,                                     # PFt (0.001)
    0x2044: 5001.0,                                    # Freq (0.01 Hz)
}
for address, value in values.items():
    hi, lo = f32(value)
    regs[address], regs[address + 1] = [hi], [lo]
for a in range(0x4000, 0x4034):
    regs[a] = [0]
for address, kwh in {0x4000: 13134.6, 0x401E: 12345.6, 0x4028: 789.0}.items():
    hi, lo = f32(kwh)
    regs[address], regs[address + 1] = [hi], [lo]

if __name__ == "__main__":
    serve(device(1, shared=regs))
