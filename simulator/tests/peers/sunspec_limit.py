"""Write an active-power limit into a SunSpec inverter (model 123) with pysunspec2.

Usage: python sunspec_limit.py HOST PORT PERCENT [UNIT]

Writes WMaxLimPct = PERCENT and WMaxLim_Ena = 1 the way the pysunspec2 documentation shows
(set the point values, then model.write()), reads the model back and prints
{"WMaxLimPct": ..., "WMaxLim_Ena": ...} as JSON.
"""

import json
import sys

import sunspec2.modbus.client as client


def main():
    host, port, percent = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    unit = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    device = client.SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr=host, ipport=port, timeout=5)
    try:
        device.scan()
        controls = device.models[123][0]
        controls.WMaxLimPct.cvalue = percent
        controls.WMaxLim_Ena.value = 1
        controls.write()
        controls.read()
        result = {"WMaxLimPct": controls.WMaxLimPct.cvalue, "WMaxLim_Ena": controls.WMaxLim_Ena.value}
    finally:
        device.disconnect()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
