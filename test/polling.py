"""Waiting on something another thread or process brings about, for tests that talk to a live graph."""

from __future__ import annotations

import time


def wait_for(condition, timeout_s: float = 10.0) -> bool:
    """Whether `condition()` became true within `timeout_s`, polled every 20 ms."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False
