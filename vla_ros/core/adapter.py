"""The embodiment adapter: one robot's joints, units, gripper and cameras <-> what a policy expects.

Every mapping comes in a mirrored pair built from the same config, so recording (robot -> policy)
and execution (policy -> robot) can never disagree:

    joint order     robot's reported order (by name)   <-> embodiment order
    units           joint units (rad, m)                <-> policy units (rad, deg, -100..100, gripper 0..1)
    delta actions   absolute joint targets              <-> deltas from the state captured with the observation
    width           n joints                            <-> zero-padded state/action width of the policy
"""

from __future__ import annotations

import math

import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig, PolicyUnit
from vla_ros.core.errors import ConfigError, ObservationError, PolicyError
from vla_ros.core.features import (
    STATE,
    TASK,
    PolicyFeatures,
    PolicyObservation,
    RobotObservation,
    image_key,
    image_mask_key,
)
from vla_ros.core.images import check_rgb, resize_with_pad


def policy_unit_affine(embodiment: EmbodimentConfig) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per joint such that policy_value = robot_value * scale + offset."""
    scale = np.ones(len(embodiment.joints))
    offset = np.zeros(len(embodiment.joints))
    for i, joint in enumerate(embodiment.joints):
        lower, upper = joint.position_limits
        unit = joint.policy_unit
        if unit is PolicyUnit.DEG:
            scale[i] = 180.0 / math.pi
        elif unit is PolicyUnit.RANGE_M100_100:
            scale[i] = 200.0 / (upper - lower)
            offset[i] = -100.0 - lower * scale[i]
        elif unit is PolicyUnit.RANGE_0_100:
            scale[i] = 100.0 / (upper - lower)
            offset[i] = -lower * scale[i]
        elif unit is PolicyUnit.GRIPPER_0_1:
            gripper = embodiment.gripper_of(joint.name)  # validated to exist for this unit
            scale[i] = 1.0 / (gripper.closed - gripper.open)
            offset[i] = -gripper.open * scale[i]
    return scale, offset


class EmbodimentAdapter:
    """Converts observations to a policy's inputs and its action chunks back to joint targets.

    Built once at start-up: an embodiment that cannot serve the policy (more joints than the policy's
    state or action width) is a ConfigError then, not mid-motion.
    """

    def __init__(self, embodiment: EmbodimentConfig, features: PolicyFeatures):
        n = len(embodiment.joints)
        for name, width in (("state_dim", features.state_dim), ("action_dim", features.action_dim)):
            if width < n:
                raise ConfigError(
                    f"the policy's {name} is {width}, but robot '{embodiment.robot}' has {n} joints "
                    f"({', '.join(embodiment.joint_names)}): choose a policy with {name} >= {n}",
                    source=embodiment.source,
                )
        self.embodiment = embodiment
        self.features = features
        self.joint_names = embodiment.joint_names
        self._scale, self._offset = policy_unit_affine(embodiment)
        self._delta = embodiment.delta_mask
        self._camera_by_key = {c.policy_key: c for c in embodiment.cameras}
        # Reported joint orders seen so far -> index of each embodiment joint; a driver's order rarely changes.
        self._order_cache: dict[tuple[str, ...], np.ndarray] = {}

    # -- observation side ------------------------------------------------------------------------------------------

    def select_joints(self, names: tuple[str, ...], positions: np.ndarray, *, source: str = "joint state"
                      ) -> np.ndarray:
        """The embodiment's joints, in embodiment order, from a report in any order: (n,) float64.

        Raises ObservationError naming the missing joints. Extra joints (a mimic finger) are ignored.
        """
        names = tuple(names)
        order = self._order_cache.get(names)
        if order is None:
            index = {name: i for i, name in enumerate(names)}
            missing = [name for name in self.joint_names if name not in index]
            if missing:
                raise ObservationError(
                    f"{source}: joints {missing} of robot '{self.embodiment.robot}' are missing "
                    f"(received {list(names)}); check the joint state topics and the joint names in "
                    f"{self.embodiment.source}"
                )
            order = np.array([index[name] for name in self.joint_names])
            if len(self._order_cache) < 16:
                self._order_cache[names] = order
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (len(names),):
            raise ObservationError(f"{source}: {len(names)} joint names but positions of shape {positions.shape}")
        return positions[order]

    def state_to_policy(self, state: np.ndarray) -> np.ndarray:
        """(n,) joint units -> (state_dim,) float32 in policy units, zero-padded."""
        out = np.zeros(self.features.state_dim, dtype=np.float32)
        out[: len(state)] = state * self._scale + self._offset
        return out

    def state_from_policy(self, policy_state: np.ndarray) -> np.ndarray:
        """Mirror of `state_to_policy`: (state_dim,) policy units -> (n,) joint units."""
        n = len(self.joint_names)
        return (np.asarray(policy_state[:n], dtype=np.float64) - self._offset) / self._scale

    def to_policy_observation(self, observation: RobotObservation) -> tuple[PolicyObservation, np.ndarray]:
        """(policy observation, the robot state (n,) it was built from, joint units).

        Keep the state: delta actions of the chunk computed from this observation are relative to it.
        A camera the policy expects but the robot lacks, or whose image did not arrive, becomes a zero
        image with its mask False.
        """
        state = self.select_joints(observation.joint_names, observation.joint_positions)
        batch: PolicyObservation = {STATE: self.state_to_policy(state), TASK: observation.instruction}
        size = self.features.image_size
        for key in self.features.camera_keys:
            camera = self._camera_by_key.get(key)
            image = observation.images.get(camera.name) if camera is not None else None
            if image is None:
                shape = size if size is not None else (camera.height, camera.width) if camera else (224, 224)
                batch[image_key(key)] = np.zeros((*shape, 3), dtype=np.uint8)
                batch[image_mask_key(key)] = False
                continue
            image = check_rgb(image, source=f"camera '{camera.name}'")
            if size is not None and not self.features.resizes_images:
                image = resize_with_pad(image, size, padding=self.features.image_padding)
            batch[image_key(key)] = image
            batch[image_mask_key(key)] = True
        return batch, state

    # -- action side -----------------------------------------------------------------------------------------------

    def actions_to_robot(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """(H, action_dim) policy actions -> (H, n) absolute joint targets, joint units.

        Delta dimensions are added to `state`, the robot state captured with the observation the chunk
        was computed from (not the current state: the arm has moved since).
        """
        actions = np.asarray(actions)
        if actions.ndim != 2 or actions.shape[1] != self.features.action_dim or actions.shape[0] == 0:
            raise PolicyError(
                f"policy returned actions of shape {actions.shape}, expected (H >= 1, {self.features.action_dim})"
            )
        n = len(self.joint_names)
        policy_values = actions[:, :n].astype(np.float64)
        policy_state = state * self._scale + self._offset
        policy_values = np.where(self._delta, policy_values + policy_state, policy_values)
        return (policy_values - self._offset) / self._scale

    def robot_to_actions(self, targets: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Mirror of `actions_to_robot`: (H, n) absolute joint targets -> (H, action_dim) float32 policy actions."""
        targets = np.asarray(targets, dtype=np.float64)
        n = len(self.joint_names)
        if targets.ndim != 2 or targets.shape[1] != n:
            raise ValueError(f"expected joint targets of shape (H, {n}), got {targets.shape}")
        policy_values = targets * self._scale + self._offset
        policy_state = state * self._scale + self._offset
        policy_values = np.where(self._delta, policy_values - policy_state, policy_values)
        out = np.zeros((len(targets), self.features.action_dim), dtype=np.float32)
        out[:, :n] = policy_values
        return out
