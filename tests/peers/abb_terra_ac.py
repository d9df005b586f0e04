"""ABB Terra AC image, written from the wallbox's Modbus register table (as evcc's abb driver
reads it). Holding registers, 32-bit values big-endian, unit 1:

  0x4006 max rated current, u32, mA         32000
  0x400C charging state, u32: byte 2 (0x7F)  C2 = 4 -> words 0x0000, 0x0400
  0x400E current charging current limit, mA 16000
  0x4010/12/14 phase currents, mA            15950, 16020, 15990
  0x4016/18/1A phase voltages, 0.1 V         2301, 2305, 2298
  0x401C active power, W                     11040
  0x401E session energy, Wh                  5230
  0x4100 set current limit, u32 mA (write only)
  0x4109 set fallback current, u16 A (write only; read back at 0x4024)
"""

from modbus_image import device, serve, u32

regs = {}
for address in range(0x4000, 0x4026, 2):
    regs[address] = u32(0)
regs[0x4006] = u32(32000)
regs[0x400C] = [0x0000, 0x0400]
regs[0x400E] = u32(16000)
regs[0x4010], regs[0x4012], regs[0x4014] = u32(15950), u32(16020), u32(15990)
regs[0x4016], regs[0x4018], regs[0x401A] = u32(2301), u32(2305), u32(2298)
regs[0x401C] = u32(11040)
regs[0x401E] = u32(5230)
for address in range(0x4100, 0x410A):
    regs[address] = [0]

if __name__ == "__main__":
    serve(device(1, shared=regs))
