"""The allocator's freed memory goes back to the system after a large buffer
(the broker trims after a large state snapshot and after recovery). Run in a
process of its own, so its heap holds only what the test makes."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

SCRIPT = """
import json
from logq.broker.memory import can_trim, release_free_memory

def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

big = bytearray(8 << 20)  # freed: glibc raises its mmap threshold past it
del big
held = [bytearray(2 << 20) for _ in range(32)]  # 64 MiB, now from the heap
for buffer in held:
    buffer[::4096] = bytes(len(range(0, len(buffer), 4096)))
del held
kept = rss()
trimmed = release_free_memory()
print(json.dumps({"can": can_trim(), "trimmed": trimmed, "kept": kept, "after": rss()}))
"""


def test_a_trim_gives_freed_heap_memory_back() -> None:
    assert platform.libc_ver()[0] == "glibc"  # the broker's allocator here
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    found = json.loads(out)
    assert found["can"] and found["trimmed"], found
    assert found["kept"] - found["after"] >= 32 << 20, found  # most of the 64 MiB freed
