"""The machine a comparison ran on: cores, CPU, memory, and what one
durable write costs on the disk under the data directories."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def fdatasync_ms(directory: str, writes: int = 200) -> dict[str, float]:
    """Median and p99 of a 4 KiB append + fdatasync in `directory`."""
    samples = []
    with tempfile.NamedTemporaryFile(dir=directory) as file:
        block = b"\0" * 4096
        for _ in range(writes):
            started = time.perf_counter()
            os.write(file.fileno(), block)
            os.fdatasync(file.fileno())
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50": round(statistics.median(samples), 3),
        "p99": round(samples[min(len(samples) - 1, int(0.99 * len(samples)))], 3),
    }


def machine(directory: str | None = None) -> dict[str, Any]:
    where = directory or tempfile.gettempdir()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "disk": {"path": where, "fdatasync_4k_ms": fdatasync_ms(where)},
    }
