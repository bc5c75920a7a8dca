"""Suite-wide hooks. Where `VLA_ROS_REQUIRE_ROS=1` (CI with ROS installed), a ROS test that skips fails instead."""

from __future__ import annotations

import gc

import pytest
from ros_graph import REQUIRE_ROS_ENV, ros_required


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and ros_required() and item.get_closest_marker("ros") is not None:
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_ROS_ENV} is set, but this ROS test skipped: {report.longrepr}"


def pytest_sessionfinish(session, exitstatus):
    # rclpy prints "exception was never retrieved" when it collects futures that in-process test nodes left behind;
    # collect them now, so those lines come before pytest's closing summary instead of after it.
    gc.collect()
