"""Helpers shared by the benchmark scripts (run them from the repository root)."""

import statistics
import time


def timed(fns: dict, reps: int) -> dict:
    """Median wall time of each function after one warm-up call; calls interleaved so drift hits all alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def proc_status(key: str) -> int:
    """A byte count from /proc/self/status, e.g. "VmRSS", "VmHWM" (peak, reset by writing 5 to clear_refs)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak_memory() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
