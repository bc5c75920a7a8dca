"""Inference threads: chosen from the model's size and the cores, set before the first forward pass, and logged."""

from __future__ import annotations

import argparse

import pytest

from vla_ros.core.errors import ConfigError
from vla_ros.policies.device import SMALL_MODEL_BYTES, parse_threads, plan_threads


def test_a_small_model_on_the_cpu_runs_on_one_thread():
    plan = plan_threads(None, device_type="cpu", weights_bytes=4 * 2**20, cpus=16, environment={})
    assert plan.threads == 1
    assert "4 MB" in plan.reason and "15 of 16 cores" in plan.reason


def test_a_large_model_leaves_one_core_to_the_control_loop():
    plan = plan_threads(None, device_type="cpu", weights_bytes=SMALL_MODEL_BYTES, cpus=8, environment={})
    assert plan.threads == 7 and "8 cores" in plan.reason
    assert plan_threads(None, device_type="cpu", weights_bytes=2**31, cpus=1, environment={}).threads == 1


def test_a_model_on_a_gpu_needs_one_cpu_thread():
    assert plan_threads(None, device_type="cuda", weights_bytes=2**31, cpus=8, environment={}).threads == 1


def test_asked_for_threads_and_the_environment_win_over_the_choice():
    assert plan_threads(3, device_type="cpu", weights_bytes=0, cpus=2, environment={}).threads == 3
    plan = plan_threads(None, device_type="cpu", weights_bytes=2**31, cpus=8, environment={"OMP_NUM_THREADS": "2"})
    assert plan.threads == 2 and "OMP_NUM_THREADS" in plan.reason
    with pytest.raises(ConfigError, match="inference threads must be 1 or more, got 0"):
        plan_threads(0, device_type="cpu", weights_bytes=0, cpus=2, environment={})


def test_the_threads_flag_takes_a_number_or_auto():
    assert parse_threads("auto") is None and parse_threads("4") == 4
    for bad in ("0", "-2", "many"):
        with pytest.raises(argparse.ArgumentTypeError, match="give 1 or more, or auto"):
            parse_threads(bad)


def test_loading_the_builtin_vla_sets_and_reports_its_threads(monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.factory import PolicyOptions, make_policy

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        policy = make_policy("builtin", embodiment=load_embodiment("so101"), options=PolicyOptions(warmup=False))
        assert policy.metadata.threads == 1 and torch.get_num_threads() == 1
        assert "too small to gain from more threads" in policy.metadata.threads_reason
        policy = make_policy(
            "builtin", embodiment=load_embodiment("so101"), options=PolicyOptions(warmup=False, threads=2)
        )
        assert policy.metadata.threads == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
