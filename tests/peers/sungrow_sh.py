"""Sungrow SH hybrid image, written from "Communication Protocol of Residential Hybrid
Inverter" V1.0.23. The document numbers registers from 1; the protocol address is number - 1.

Input registers (function 4), unit 1, an SH10RT charging its battery from PV:
  5000  device type code          0x0E03 (SH10RT)
  13001 running state             0x0003: bit 0 PV generating, bit 1 battery charging
  13020 battery voltage, 0.1 V    392.5 V -> 3925
  13021 battery current, 0.1 A    6.2 A -> 62
  13022 battery power, W          2450 (magnitude; the direction is in 13001)
  13023 battery level, 0.1 %      65.3 % -> 653
  13024 battery SoH, 0.1 %        98.0 % -> 980
Holding registers (function 3/6):
  13050 EMS mode selection        0 self-consumption (2 forced)
  13051 charge/discharge command  0xCC stop (0xAA charge, 0xBB discharge)
  13052 charge/discharge power, W 0
"""

from modbus_image import device, serve


def number(n):
    """Protocol address of a register numbered from 1 in the document."""
    return n - 1


input_regs = {number(5000): [0x0E03]}
for n in range(13001, 13031):
    input_regs[number(n)] = [0]
input_regs[number(13001)] = [0x0003]
input_regs[number(13020)] = [3925]
input_regs[number(13021)] = [62]
input_regs[number(13022)] = [2450]
input_regs[number(13023)] = [653]
input_regs[number(13024)] = [980]

holding = {number(n): [0] for n in range(13050, 13053)}
holding[number(13051)] = [0xCC]

if __name__ == "__main__":
    serve(device(1, holding=holding, input_regs=input_regs))
