"""vla_ros's SmolVLA against LeRobot's own actions, for every LeRobot release in test/fixtures (no LeRobot here).

Each fixture case is a tiny random checkpoint saved by LeRobot, fixed inputs and noise, and LeRobot's actions
(tools/parity/smolvla_fixtures.py, run in one side environment per release). vla_ros must give the same actions
to 1e-4, and the tests below fail where a behaviour LeRobot has (patch positions, normalization modes, the
postprocessor's stats, tied embeddings, the robot path's resize) is lost.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the SmolVLA backend needs torch")
pytest.importorskip("transformers", reason="the SmolVLA backend needs transformers")

from parity_fixtures import (  # noqa: E402
    FIXTURES,
    TOLERANCE,
    case_meta,
    release,
    run_smolvla_case,
    smolvla_cases,
    trained_patch_positions,
)

from vla_ros.core.errors import ConfigError  # noqa: E402
from vla_ros.policies.smolvla.checkpoint import VLA_ROS_FILE, load_checkpoint, patch_positions_for, read_config  # noqa: E402

CASES = smolvla_cases()
RELEASES = sorted({release(case) for case in CASES})
OTHER = {"transformers4": "transformers5", "transformers5": "transformers4"}


def _id(case) -> str:
    return f"{release(case)}-{case.name}"


def test_fixtures_cover_every_release_and_case():
    assert {"0.4.4", "0.6.1"} <= set(RELEASES), RELEASES
    names = {case.name for case in CASES if release(case) == RELEASES[0]}
    for name in names:
        assert all((FIXTURES / f"smolvla_lerobot_{r}" / name).is_dir() for r in RELEASES), name
    modes = set()
    for case in CASES:
        pipeline = json.loads((case / "checkpoint" / "policy_preprocessor.json").read_text())
        normalizer = next(step for step in pipeline["steps"] if step["registry_name"] == "normalizer_processor")
        modes |= set(normalizer["config"]["norm_map"].items())
    for feature in ("STATE", "ACTION", "VISUAL"):
        for mode in ("MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10", "IDENTITY"):
            assert (feature, mode) in modes


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_actions_match_lerobot(case):
    ours, theirs = run_smolvla_case(case)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= TOLERANCE


@pytest.mark.parametrize("release_name", RELEASES)
def test_the_other_patch_positions_would_be_far_off(release_name):
    """Each release's fixture tells the two behaviours apart by far more than the tolerance."""
    case = next(c for c in CASES if release(c) == release_name and c.name == "two_cameras")
    ours, theirs = run_smolvla_case(case)
    assert np.abs(ours - theirs).max() <= TOLERANCE
    wrong, _ = run_smolvla_case(case, patch_positions=OTHER[trained_patch_positions(case)])
    assert np.abs(wrong - theirs).max() > 100 * TOLERANCE


def test_checkpoints_of_lerobot_0_6_say_so_and_run_without_an_override():
    case = next(c for c in CASES if release(c) == "0.6.1" and c.name == "one_camera")
    positions, reason = patch_positions_for(read_config(case / "checkpoint"))
    assert positions == "transformers5" and "pretrained_revision" in reason
    ours, theirs = run_smolvla_case(case, patch_positions=None)
    assert np.abs(ours - theirs).max() <= TOLERANCE


def test_checkpoints_that_say_nothing_run_the_newest_behaviour_and_the_override_wins(tmp_path):
    case = next(c for c in CASES if release(c) == "0.4.4" and c.name == "one_camera")
    positions, reason = patch_positions_for(read_config(case / "checkpoint"))
    assert positions == "transformers5" and "nothing in the checkpoint" in reason
    assert patch_positions_for(read_config(case / "checkpoint"), "transformers4") == ("transformers4",
                                                                                      "set explicitly")
    with pytest.raises(ConfigError, match="'transformers6' is not one of"):
        patch_positions_for(read_config(case / "checkpoint"), "transformers6")
    directory = shutil.copytree(case / "checkpoint", tmp_path / "checkpoint")
    (directory / VLA_ROS_FILE).write_text(json.dumps({"vision_patch_positions": "transformers4"}))
    assert patch_positions_for(read_config(directory))[0] == "transformers4"


def test_robot_frames_fast_path_moves_the_actions_and_exact_path_does_not():
    case = next(c for c in CASES if release(c) == RELEASES[-1] and c.name == "robot_frame")
    assert case_meta(case)["frame_size"] == [480, 640]
    exact, theirs = run_smolvla_case(case)
    fast, _ = run_smolvla_case(case, image_resize="fast")
    assert np.abs(exact - theirs).max() <= TOLERANCE
    assert np.abs(fast - theirs).max() > 10 * TOLERANCE  # OpenCV's uint8 resize is not LeRobot's float one


def test_postprocessor_stats_unnormalize_the_actions():
    case = next(c for c in CASES if c.name == "postprocessor_stats")
    checkpoint = load_checkpoint(case / "checkpoint", patch_positions="transformers4")
    processor = checkpoint.processor
    assert not torch.equal(processor.normalizer.stats["action.mean"], processor.unnormalizer.stats["action.mean"])
    normalized = torch.zeros(1, 2, checkpoint.config.max_action_dim)
    np.testing.assert_allclose(processor.unnormalize_actions(normalized)[0, 0],
                               processor.unnormalizer.stats["action.mean"].numpy(), atol=1e-6)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c, p, q: c.update(future_option=3), "unknown key 'future_option' \\(value 3\\)"),
    (lambda c, p, q: c.update(use_peft=True), "key 'use_peft'.*PEFT adapters"),
    (lambda c, p, q: c.update(n_obs_steps=2), "key 'n_obs_steps'"),
    (lambda c, p, q: p["steps"].append({"registry_name": "image_crop_processor"}),
     "step 'image_crop_processor' is not one vla_ros implements"),
    (lambda c, p, q: p["steps"][0]["config"].update(rename_map={"a": "b"}), "rename_map = \\{'a': 'b'\\}"),
    (lambda c, p, q: p["steps"][-1]["config"]["norm_map"].update(STATE="LOG"),
     "STATE normalization 'LOG' is not one vla_ros implements"),
    (lambda c, p, q: q["steps"][0]["config"]["norm_map"].update(ACTION="ROBUST"),
     "ACTION normalization 'ROBUST' is not one vla_ros implements"),
    (lambda c, p, q: p["steps"][3]["config"].update(padding_side="left"), "padding_side = 'left'"),
])
def test_what_vla_ros_does_not_implement_is_refused_by_name(tmp_path, edit, message):
    case = next(c for c in CASES if release(c) == "0.4.4" and c.name == "one_camera")
    directory = shutil.copytree(case / "checkpoint", tmp_path / "checkpoint")
    files = [directory / name for name in ("config.json", "policy_preprocessor.json", "policy_postprocessor.json")]
    documents = [json.loads(path.read_text()) for path in files]
    edit(*documents)
    for path, document in zip(files, documents, strict=True):
        path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=message):
        load_checkpoint(directory)
