"""Victron MultiPlus-II behind a GX device, the com.victronenergy.vebus registers written from
Victron's "CCGX Modbus-TCP register list" (Rev 32). Holding registers, unit 227 (a Cerbo GX's
VE.Bus port). The sheet's scale multiplies the value into the register (register = value x
scale); int16 registers are two's complement.

A single-phase system in ESS mode 3, discharging: the GX has been told to feed 1200 W back
through AC-in; nothing is connected to AC-out.

   3  input voltage phase 1, uint16, scale 10       230.4 V  -> 2304
   6  input current phase 1, int16, scale 10        -5.2 A   -> -52 (Multi to mains)
   9  input frequency 1, int16, scale 100           50.01 Hz -> 5001
  12  input power 1, int16, scale 0.1               -1200 W  -> -120 (Multi to mains)
  15  output voltage phase 1, uint16, scale 10      230.1 V  -> 2301
  18  output current phase 1, int16, scale 10       0
  21  output frequency, int16, scale 100            50.01 Hz -> 5001
  22  active input current limit, int16, scale 10   16.0 A   -> 160
  23  output power 1, int16, scale 0.1              0
  26  battery voltage, uint16, scale 100            52.34 V  -> 5234
  27  battery current, int16, scale 10              -24.5 A  -> -245 (out of the battery)
  28  phase count, uint16                           1
  29  active input, uint16                          0 (AC-in 1)
  30  VE.Bus state of charge, uint16, scale 10      71.5 %   -> 715
  31  VE.Bus state, uint16                          9 (inverting)
  32  VE.Bus error, uint16                          0
  33  switch position, uint16                       3 (on)
  37  ESS power setpoint phase 1, int16, W          -1200 (writable; < 0 discharge)
  38  ESS disable charge flag, uint16               0 (writable)
  39  ESS disable feedback flag, uint16             0 (writable)
  40  ESS power setpoint phase 2, int16, W          0 (writable)
  41  ESS power setpoint phase 3, int16, W          0 (writable)
"""

from modbus_image import device, serve


def s16(value):
    return value & 0xFFFF


regs = {a: [0] for a in range(3, 69)}
regs[3] = [2304]
regs[6] = [s16(-52)]
regs[9] = [5001]
regs[12] = [s16(-120)]
regs[15] = [2301]
regs[21] = [5001]
regs[22] = [160]
regs[26] = [5234]
regs[27] = [s16(-245)]
regs[28] = [1]
regs[29] = [0]
regs[30] = [715]
regs[31] = [9]
regs[33] = [3]
regs[37] = [s16(-1200)]

if __name__ == "__main__":
    serve(device(227, holding=regs))
