"""vla_ros run on the LeRobot fixtures of tools/parity/smolvla_fixtures.py (no LeRobot needed).

Used by test/test_policy_parity.py and by tools/parity/table.py, which prints the parity table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
TOLERANCE = 1e-4  # max |a_vla_ros - a_LeRobot|, float32
ROBOT = "so101"  # the robot path's embodiment: 6 joints, cameras front and wrist at 640x480


def smolvla_cases() -> list[Path]:
    return sorted(path.parent for path in FIXTURES.glob("smolvla_lerobot_*/*/case.json"))


def release(case: Path) -> str:
    return case.parent.name.rsplit("_", 1)[-1]


def case_meta(case: Path) -> dict:
    return json.loads((case / "case.json").read_text(encoding="utf-8"))


def trained_patch_positions(case: Path) -> str:
    """The patch positions the LeRobot that wrote the case ran with (its transformers' major version)."""
    major = case_meta(case)["made_with"]["transformers"].split(".")[0]
    return "transformers4" if major == "4" else "transformers5"


def run_smolvla_case(case: Path, *, patch_positions: str | None = "recorded", image_resize: str = "exact"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(vla_ros's actions, LeRobot's actions), each (B, chunk, action_dim), for one fixture case.

    `patch_positions`: "recorded" (what the fixture's LeRobot ran), None (what vla_ros finds in the checkpoint's
    files) or an explicit behaviour. Each observation runs on its own (LeRobot ran the batch at once).
    """
    from safetensors.torch import load_file

    from vla_ros.core.features import STATE, TASK, image_key, image_mask_key
    from vla_ros.policies.smolvla.checkpoint import load_checkpoint
    from vla_ros.policies.smolvla.policy import SmolVLAPolicy

    meta = case_meta(case)
    io = load_file(str(case / "io.safetensors"))
    if patch_positions == "recorded":
        patch_positions = trained_patch_positions(case)
    checkpoint = load_checkpoint(case / "checkpoint", patch_positions=patch_positions)
    policy = SmolVLAPolicy(checkpoint, action_dt_s=0.1, warmup=False, image_resize=image_resize)
    if meta["robot_path"]:
        ours = np.stack([_robot_path_chunk(case, policy, io, i) for i in range(len(io["state"]))])
        return ours, io["actions"].numpy()
    chunks = []
    for i, task in enumerate(meta["tasks"]):
        observation = {STATE: io["state"][i].numpy(), TASK: task}
        for camera in policy.metadata.features.camera_keys:
            fed = f"image_{camera}" in io
            observation[image_key(camera)] = (io[f"image_{camera}"][i].numpy() if fed
                                              else np.zeros((32, 32, 3), dtype=np.uint8))
            observation[image_mask_key(camera)] = fed
        chunks.append(policy.sample(observation, io["noise"][i : i + 1]))
    return np.stack(chunks), io["actions"].numpy()


def _robot_path_chunk(case: Path, policy, io: dict, index: int) -> np.ndarray:
    """The node's path: bgr8 camera buffers decoded by core.images, the adapter's observation, the policy."""
    import cv2

    from vla_ros.core.adapter import EmbodimentAdapter
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.features import STATE, RobotObservation
    from vla_ros.core.images import decode_raw_image

    features = policy.metadata.features
    embodiment = load_embodiment(ROBOT)
    adapter = EmbodimentAdapter(embodiment, features)
    images = {}
    for camera in embodiment.cameras:
        bgr = cv2.imread(str(case / f"frame_{camera.policy_key}_{index}.png"), cv2.IMREAD_COLOR)  # as a driver sends
        images[camera.name] = decode_raw_image(bgr.tobytes(), height=bgr.shape[0], width=bgr.shape[1],
                                               step=bgr.shape[1] * 3, encoding="bgr8", source=camera.name)
    state = io["state"][index].numpy()
    robot = RobotObservation(stamp=0.0, joint_names=embodiment.joint_names,
                             joint_positions=adapter.state_from_policy(state), images=images,
                             instruction=case_meta(case)["tasks"][index])
    observation, _ = adapter.to_policy_observation(robot)
    observation[STATE] = state  # the exact float32 state LeRobot saw (the adapter's units round trip is float64)
    return policy.sample(observation, io["noise"][index : index + 1])
