"""What the benchmarks record about the machine they ran on."""

import os
import platform


def machine() -> str:
    """CPU model, core count, OS and load average, e.g. for a report's `machine` field."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} (load average {load} at the end)"
