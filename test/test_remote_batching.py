"""The policy server's model worker: batched forward passes give each request its own chunk, shapes never mix."""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_remote_gr00t import BatchingPolicy
from test_remote_policy import expected_actions, features

from vla_ros.core.adapter import EmbodimentAdapter
from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.features import STATE, image_key
from vla_ros.policies.remote.batching import BatchConfig, InferenceBatcher


def observation(state: float, size: int) -> dict:
    return {STATE: np.full(8, state, dtype=np.float32), "task": "go",
            image_key("front"): np.zeros((size, size, 3), np.uint8),
            image_key("wrist"): np.zeros((size, size, 3), np.uint8)}


def test_queued_requests_share_a_pass_per_input_shape():
    policy = BatchingPolicy(features())
    policy.delay_s = 0.3
    batcher = InferenceBatcher(policy, BatchConfig(max_batch=8, max_wait_s=0.0))
    try:
        first = batcher.submit(observation(0.0, 32), client="a")  # keeps the worker busy while the rest queue
        deadline = time.monotonic() + 10
        while policy.active == 0:  # the lone first request is in the model (predict_chunk)
            assert time.monotonic() < deadline
            time.sleep(0.005)
        queued = [batcher.submit(observation(0.1 * i, 32 if i < 3 else 16), client=f"c{i}") for i in range(1, 5)]
        first.result(timeout=10)
        results = [future.result(timeout=10) for future in queued]
    finally:
        batcher.close()
    assert policy.batch_sizes == [2, 2]  # after the lone first request (predict_chunk): 32-px pair, 16-px pair
    for i, (actions, timing) in enumerate(results, start=1):
        np.testing.assert_allclose(actions, expected_actions(policy, np.full(8, 0.1 * i, np.float32)), rtol=1e-6)
        assert timing["batch_size"] == 2


def test_a_policy_failure_fails_its_batch_and_the_worker_goes_on():
    policy = BatchingPolicy(features())
    batcher = InferenceBatcher(policy, BatchConfig(max_batch=4, max_wait_s=0.0))
    try:
        policy.delay_s = float("nan")  # time.sleep raises ValueError inside the model call
        with pytest.raises(ValueError):
            batcher.submit(observation(0.0, 32)).result(timeout=10)
        policy.delay_s = 0.0
        actions, _ = batcher.submit(observation(0.5, 32)).result(timeout=10)
        np.testing.assert_allclose(actions, expected_actions(policy, np.full(8, 0.5, np.float32)), rtol=1e-6)
    finally:
        batcher.close()


def test_builtin_vla_gives_the_same_chunks_batched():
    pytest.importorskip("torch", reason="the built-in VLA needs the 'policies' extra")
    from vla_ros.policies.factory import make_policy

    so101 = load_embodiment("so101")
    policy = make_policy("builtin", embodiment=so101)
    adapter = EmbodimentAdapter(so101, policy.metadata.features)
    batch = [adapter.to_policy_observation(so101.example_observation(seed=i, instruction=task))[0]
             for i, task in enumerate(("touch the red cube", "touch the blue cube", "pick up the green cube"))]
    policy.reset(seed=7)
    one_by_one = [policy.predict_chunk(o) for o in batch]
    policy.reset(seed=7)
    together = policy.predict_chunks(batch)
    assert together.shape == (3, *one_by_one[0].shape)
    for chunk, single in zip(together, one_by_one, strict=True):
        np.testing.assert_allclose(chunk, single, atol=1e-4)  # float32 sums in another order
