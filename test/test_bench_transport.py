"""`vla-ros bench transport` runs its two processes over DDS and reports what arrived (figures: not asserted)."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("cyclonedds", reason="needs the cyclonedds wheel (pip install -e '.[dds]')")
pytest.importorskip("rosbags", reason="needs rosbags (pip install -e '.[dds]')")

from vla_ros.bench import transport  # noqa: E402


def test_transport_benchmark_reports_latency_and_loss(monkeypatch, tmp_path):
    monkeypatch.setenv("CYCLONEDDS_URI", transport.LOOPBACK_CONFIG.as_uri())
    parser = argparse.ArgumentParser()
    transport.add_arguments(parser)
    args = parser.parse_args(["--images", "10", "--image-rate-hz", "50", "--joint-seconds", "0.2",
                              "--domain-id", "66", "--out", str(tmp_path)])
    result = transport.measure(args)
    image, joints = result["image"], result["joint_state"]
    assert image["sent"] == 10 and 0 < image["received"] <= 10 and image["intact"]
    assert image["one_way_latency_ms"]["count"] == image["received"]
    assert 0 < image["one_way_latency_ms"]["p50"] < 1000  # same monotonic clock on both sides: a sane latency
    assert joints["sent"] == 100 and joints["received"] + joints["lost"] == 100
    assert image["memcpy_reference_ms"]["count"] == 500
    assert (tmp_path / "transport.png").is_file()
