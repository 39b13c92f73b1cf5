"""What the benchmarks record about the machine they ran on."""

import os

from s3rec_tf import sweep


def machine() -> str:
    """CPU model, core count and OS (as sweep.json records them), with the load average, e.g.
    for a report's `machine` field."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{sweep.machine()} (load average {load} at the end)"
