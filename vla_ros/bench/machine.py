"""How busy the machine is, a CPU hog to make it busy on purpose, and what a loaded machine did to a run.

The demo charges measured inference time to simulated time, as a real robot lives it: on a busy machine the
policy's chunks arrive late and the arm waits or runs on stale plans. `load_warning` says so in a report;
`CpuHog` lets `vla-ros bench load` measure it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

from vla_ros.policies.device import available_cpus

# A chunk-latency tail this many times the median means the policy waited for the CPU (a quiet machine's p99 of
# the built-in VLA stays under 2x its median), or a sustained 1-minute load average above the cores.
LATENCY_TAIL_RATIO = 3.0
LATENCY_TAIL_MIN_MS = 50.0  # below this a tail is harmless at the control rates used here

# The hog's busy loop. It ends by itself at its deadline, or when the process that started it is gone, so that no
# busy loop outlives its benchmark even after a crash or kill -9.
_HOG_CODE = """
import os, sys, time
deadline, parent = float(sys.argv[1]), int(sys.argv[2])
while time.time() < deadline and os.getppid() == parent:
    for _ in range(200000):
        pass
"""


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU time of the whole machine from /proc/stat (jiffies)."""

    busy: int
    total: int

    @classmethod
    def now(cls) -> CpuTimes | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):  # not Linux
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return cls(busy=sum(fields) - idle, total=sum(fields))


def busy_fraction(start: CpuTimes | None, end: CpuTimes | None) -> float | None:
    """Fraction of all cores' time spent busy between two readings (1.0: every core busy all the time)."""
    if start is None or end is None or end.total <= start.total:
        return None
    return round((end.busy - start.busy) / (end.total - start.total), 3)


def load_average() -> float | None:
    """The 1-minute load average: runnable processes, averaged; compare with the cores."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def load_warning(
    policy_ms: list[float], *, load_1min: float | None, cpus: int | None = None, threads: int | None = None
) -> str | None:
    """What a report should say when the machine was loaded during a run, with what to do; None when it was not.

    `policy_ms`: wall time of each chunk; `load_1min`: the load average at the end of the run; `threads`: the
    model's inference threads.
    """
    import numpy as np

    cpus = cpus or available_cpus()
    reasons = []
    if len(policy_ms) >= 5:
        p50, p99 = np.percentile(policy_ms, 50), np.percentile(policy_ms, 99)
        if p99 > LATENCY_TAIL_RATIO * p50 and p99 > LATENCY_TAIL_MIN_MS:
            reasons.append(f"chunk latency p99 {p99:.0f} ms is {p99 / p50:.1f}x its median {p50:.0f} ms")
    if load_1min is not None and load_1min > cpus:
        reasons.append(f"the load average was {load_1min:.1f} on {cpus} cores")
    if not reasons:
        return None
    advice = (
        "close other programs or wait for them to finish, then run again; "
        "--no-measured-latency judges the policy apart from this machine's speed"
    )
    if threads is not None and threads > 1:
        advice = f"try --threads 1 (now {threads}); " + advice
    return (
        f"the machine was busy ({'; '.join(reasons)}): the policy waited for the CPU, so its chunks arrived late "
        f"and success may be lower than on a quiet machine. What to do: {advice}"
    )


class CpuHog:
    """`processes` busy loops (default: one per core), started on entering and always stopped on leaving.

    Each loop also ends by itself after `max_seconds` or when this process is gone. `own_sessions`: each loop runs
    in a session of its own, as another program on the machine does (Linux's autogroup scheduling shares the CPU
    between sessions first); off, the loops share this process's session and compete with it thread by thread.
    """

    def __init__(self, processes: int | None = None, *, max_seconds: float = 3600.0, own_sessions: bool = True):
        self.processes = processes if processes is not None else available_cpus()
        self.max_seconds = max_seconds
        self.own_sessions = own_sessions
        self._children: list[subprocess.Popen] = []

    def __enter__(self) -> CpuHog:
        deadline = time.time() + self.max_seconds
        try:
            for _ in range(self.processes):
                self._children.append(
                    subprocess.Popen(
                        [sys.executable, "-c", _HOG_CODE, repr(deadline), str(os.getpid())],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=self.own_sessions,
                    )
                )
        except BaseException:
            self.stop()
            raise
        time.sleep(0.3)  # the loops are running before anything is timed
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        """Process ids of the busy loops still running."""
        return [child.pid for child in self._children if child.poll() is None]

    def stop(self) -> None:
        for child in self._children:
            if child.poll() is None:
                child.terminate()
        for child in self._children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self._children.clear()
