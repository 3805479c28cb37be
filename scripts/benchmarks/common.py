"""What every benchmark section shares: the machine's description, timing, memory."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parent.parent.parent
# The driver: sections re-run it in a child process (`--_scaling_child`, `--_eval_child`).
SCRIPT = ROOT / "scripts" / "benchmark.py"


def machine_description() -> str:
    """One line describing the machine the figures come from."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    gpu = f"{len(gpus)} GPU(s)" if gpus else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores{mem}, {gpu}; Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, NumPy {np.__version__}")


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Wall-clock seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _rss_mib(field: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process, MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**10
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def _reset_peak() -> None:
    """Resets VmHWM to the current RSS where the kernel allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _command(args) -> str:
    return "`" + " ".join([f"nice -n {os.nice(0)}" if os.nice(0) else "", "python",
                           "scripts/benchmark.py", *sys.argv[1:]]).strip() + "`"
