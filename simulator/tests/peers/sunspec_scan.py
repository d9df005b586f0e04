"""Scan one SunSpec device with pysunspec2 and print what it decoded as JSON.

Usage: python sunspec_scan.py HOST PORT [UNIT]

Output: {"models": [1, 103, ...], "values": {"103": {"W": 110600.0, ...}, ...}}, with every
point of every model scaled by pysunspec2 (computed values); values that are "not
implemented" are null.
"""

import json
import math
import sys

import sunspec2.modbus.client as client


def clean(value):
    """JSON-safe: NaN/inf and "not implemented" become null, nested groups are kept."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    unit = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    device = client.SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr=host, ipport=port, timeout=5)
    try:
        device.scan()
        models = sorted(k for k in device.models if isinstance(k, int))
        values = {}
        for model_id in models:
            values[str(model_id)] = clean(device.models[model_id][0].get_dict(computed=True))
    finally:
        device.disconnect()
    print(json.dumps({"models": models, "values": values}))


if __name__ == "__main__":
    main()
