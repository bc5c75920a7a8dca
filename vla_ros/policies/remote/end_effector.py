"""End-effector kinematics for end-effector-delta policies (OpenVLA): joint targets from tool poses and back.

The robot YAML names a solver under `policy_servers.openvla.end_effector`. `mujoco`: the simulator's model of
the robot (vla_ros/sim, the simulated arms) with damped-least-squares inverse kinematics on its tool centre site.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, did_you_mean

logger = logging.getLogger("vla_ros.remote")

SOLVERS = ("mujoco",)
# A pose the solver misses by more than this is reported (and counted), not silently executed as if reached.
POSITION_TOLERANCE_M = 2e-3
ROTATION_TOLERANCE_RAD = 2e-2


class EndEffectorKinematics:
    """Forward and inverse kinematics of the robot's arm joints (every joint but the gripper)."""

    def __init__(self, embodiment: EmbodimentConfig, spec: Mapping[str, Any]):
        key = "policy_servers.openvla.end_effector"
        for name in spec:
            if name not in ("solver", "site"):
                raise ConfigError("unknown key." + did_you_mean(str(name), ("solver", "site")),
                                  source=embodiment.source, key=f"{key}.{name}")
        solver = spec.get("solver")
        if solver not in SOLVERS:
            raise ConfigError(f"solver must be one of {list(SOLVERS)}, got {solver!r}", source=embodiment.source,
                              key=f"{key}.solver")
        # mujoco through vla_ros.sim, which chooses MuJoCo's GL backend before mujoco is first imported.
        from vla_ros.sim import ik
        from vla_ros.sim.robots import ROBOTS
        from vla_ros.sim.world import ASSETS_DIR

        robot = ROBOTS.get(embodiment.robot)
        if robot is None:
            raise ConfigError(f"solver 'mujoco' uses the simulator's model of the robot, and the simulator has no "
                              f"'{embodiment.robot}' (it has {', '.join(ROBOTS)})", source=embodiment.source,
                              key=f"{key}.solver")
        model = ik.mujoco.MjSpec.from_file(str(ASSETS_DIR / robot.model_file)).compile()
        site = spec.get("site", robot.tcp_site)
        try:
            model.site(site)
        except KeyError:
            raise ConfigError(f"the model of '{embodiment.robot}' has no site '{site}'", source=embodiment.source,
                              key=f"{key}.site") from None
        self.arm = np.flatnonzero(embodiment.arm_mask)
        self.gripper = embodiment.grippers[0]
        self.gripper_index = embodiment.joint_names.index(self.gripper.joint)
        arm_names = tuple(embodiment.joint_names[i] for i in self.arm)
        self._ik = ik.TcpIk(model, arm_names, site=site, posture=embodiment.home[self.arm])
        self.misses = 0  # poses solved outside the tolerances

    def forward(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,) m, rotation (3, 3)) of the tool for the robot's joints (n,) (the gripper is ignored)."""
        return self._ik.forward(np.asarray(joints, dtype=np.float64)[self.arm])

    def inverse(self, position: np.ndarray, rotation: np.ndarray, seed: np.ndarray) -> np.ndarray:
        """The robot's joints (n,) putting the tool at the pose, nearest `seed` (n,); the gripper keeps seed's."""
        solution = self._ik.solve(position, rotation, np.asarray(seed, dtype=np.float64)[self.arm],
                                  lean_to_posture=False)
        if not solution.converged(position_tolerance_m=POSITION_TOLERANCE_M,
                                  rotation_tolerance_rad=ROTATION_TOLERANCE_RAD):
            self.misses += 1
            if self.misses == 1 or self.misses % 100 == 0:
                logger.warning("end-effector pose out of reach (missed by %.1f mm, %.3f rad); the nearest "
                               "reachable joints are used (%d such poses so far)", solution.position_error_m * 1e3,
                               solution.rotation_error_rad, self.misses)
        joints = np.array(seed, dtype=np.float64)
        joints[self.arm] = solution.positions
        return joints

    def gripper_joint(self, opening: float) -> float:
        """The gripper joint position for an opening of 1 (open) .. 0 (closed)."""
        return self.gripper.closed + float(opening) * (self.gripper.open - self.gripper.closed)

    def gripper_opening(self, joint: float) -> float:
        """Mirror of `gripper_joint`."""
        return (float(joint) - self.gripper.closed) / (self.gripper.open - self.gripper.closed)
