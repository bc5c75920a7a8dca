"""The simulated tabletop: one arm under joint_trajectory_controller semantics, coloured cubes and two cameras.

A `SimWorld` is what the ROS layer and the evaluation loops see instead of a robot: joint states and camera images
out, joint trajectories in. Its ground-truth accessors (cube poses, TCP pose, contacts) are for task success checks
and scripted experts only; a policy must not see them.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from vla_ros.core.errors import ConfigError, did_you_mean
from vla_ros.core.trajectory import JointTrajectory
from vla_ros.sim.executor import ControllerSetExecutor
from vla_ros.sim.palette import CUBE_COLORS
from vla_ros.sim.robots import SimRobot, get_robot
from vla_ros.sim.tasks import place_beside
from vla_ros.sim.variation import SceneVariation, add_distractors, apply_to_model

if TYPE_CHECKING:
    from vla_ros.sim.tasks import CubePlacement, Task

ASSETS_DIR = Path(__file__).parent / "assets"


class SimWorld:
    """One arm (`robot`: a name of robots.SIM_ROBOTS) on a table with one cube per colour in `colors`.

    `joint_groups` splits the joints between several trajectory controllers, as an arm controller and a gripper
    controller (each group takes trajectories for exactly its joints); None: one controller for every joint.
    `variation` changes the scene (distractor objects, lights, the front camera; see sim.variation); None builds
    it exactly as scene.xml and the robot's file say.

    Every joint array is (D,) float64 in `joint_names` order and joint units (rad, or m for prismatic joints);
    positions are in metres in the world frame, whose origin is the arm's base on the table top (z = 0, +x forward).
    """

    camera_names: tuple[str, ...] = ("front", "wrist")

    def __init__(
        self,
        robot: str,
        *,
        camera_size: tuple[int, int] = (480, 640),
        render: bool = True,
        colors: tuple[str, ...] = ("red", "green", "blue"),
        joint_groups: tuple[tuple[str, ...], ...] | None = None,
        variation: SceneVariation | None = None,
    ):
        self.robot = robot
        # Held while stepping and while reading ground truth from another thread (the scripted expert in the
        # ROS demo container plans in the policy's inference thread while the robot node steps physics).
        self.lock = threading.RLock()
        self.sim_robot: SimRobot = get_robot(robot)  # home pose, gripper values, limits, workspace
        self.joint_names: tuple[str, ...] = self.sim_robot.joint_names
        self.cube_colors: tuple[str, ...] = _checked_colors(colors)
        height, width = camera_size

        spec = mujoco.MjSpec.from_file(str(ASSETS_DIR / self.sim_robot.model_file))
        _add_cubes(spec, self.cube_colors, self.sim_robot)
        self.variation = variation
        # Distractor name -> height of its centre at rest on the table; they are placed with the cubes.
        self._distractor_rest_heights: dict[str, float] = {}
        if variation is not None:
            workspace = self.sim_robot.workspace
            self._distractor_rest_heights = add_distractors(
                spec, variation.distractors, cube_size_m=self.cube_size_m,
                park_at=(workspace.max_radius_m + 2 * workspace.min_spacing_m, 0.0))
        spec.visual.global_.offwidth = max(spec.visual.global_.offwidth, width)
        spec.visual.global_.offheight = max(spec.visual.global_.offheight, height)
        self.model = spec.compile()
        if variation is not None:
            apply_to_model(self.model, variation)
        self.data = mujoco.MjData(self.model)

        model = self.model
        joint_ids = [model.joint(name).id for name in self.joint_names]
        self._qpos_addresses = model.jnt_qposadr[joint_ids]
        self._dof_addresses = model.jnt_dofadr[joint_ids]
        self._actuator_ids = np.array([model.actuator(name).id for name in self.joint_names])
        # MuJoCo's position actuator damps the absolute joint velocity (force = kp (ctrl - q) - kv qdot). Leading the
        # setpoint by kv/kp times the desired velocity turns that into damping of the tracking error, as a servo with
        # velocity feed-forward does, so the arm follows moving setpoints without lag.
        self._velocity_feedforward_s = (
            -model.actuator_biasprm[self._actuator_ids, 2] / model.actuator_gainprm[self._actuator_ids, 0]
        )
        self._tcp_site = model.site(self.sim_robot.tcp_site).id
        self._gripper_geoms = _subtree_geoms(model, model.body(self.sim_robot.gripper_body).id)
        self._jaw_geoms = tuple(model.geom(name).id for name in self.sim_robot.jaw_geoms)
        self._cube_geoms = {color: model.geom(f"cube_{color}").id for color in self.cube_colors}
        cube_joints = {color: model.joint(f"cube_{color}").id for color in self.cube_colors}
        self._cube_qpos_addresses = {color: model.jnt_qposadr[joint] for color, joint in cube_joints.items()}
        self._cube_dof_addresses = {color: model.jnt_dofadr[joint] for color, joint in cube_joints.items()}
        distractor_joints = {name: model.joint(name).id for name in self._distractor_rest_heights}
        self._distractor_addresses = {name: (model.jnt_qposadr[joint], model.jnt_dofadr[joint])
                                      for name, joint in distractor_joints.items()}

        self._executor = ControllerSetExecutor(
            self.joint_names, np.array(self.sim_robot.home), tuple(joint_groups or (self.joint_names,))
        )
        self._requested_time = 0.0
        self._renderer = _make_renderer(model, height, width) if render else None
        self._set_state(layout=None)

    # --- episode ---

    @property
    def time(self) -> float:
        """Simulated time since the last reset (s)."""
        return float(self.data.time)

    @property
    def cube_size_m(self) -> float:
        """Edge length of every cube (m)."""
        return self.sim_robot.cube_size_m

    def reset(self, task: Task, seed: int) -> None:
        """Arm at home holding still, cubes placed by `task` at random (same `seed`, same layout), time 0."""
        rng = np.random.default_rng(seed)
        layout = task.sample_layout(self.cube_colors, self.sim_robot.workspace, rng)
        if self._distractor_rest_heights:  # around the cubes, which stay where the seed puts them without them
            layout |= place_beside(layout, tuple(self._distractor_rest_heights), self.sim_robot.workspace, rng)
        self._set_state(layout)

    def _set_state(self, layout: dict[str, CubePlacement] | None) -> None:
        """Home pose, zero velocities, cubes at `layout` (None: where the model puts them), empty trajectory."""
        mujoco.mj_resetData(self.model, self.data)
        home = np.array(self.sim_robot.home)
        self.data.qpos[self._qpos_addresses] = home
        _satisfy_joint_equalities(self.model, self.data)
        self.data.ctrl[self._actuator_ids] = home
        self._executor.hold(home)
        self._requested_time = 0.0
        for name, placement in (layout or {}).items():
            if name in self._distractor_rest_heights:
                qpos, dof = self._distractor_addresses[name]
                _write_free_pose(self.data, qpos, dof, (placement.x, placement.y, self._distractor_rest_heights[name]),
                                 placement.yaw)
            else:
                self._write_cube_pose(name, (placement.x, placement.y, self.cube_size_m / 2), placement.yaw)
        mujoco.mj_forward(self.model, self.data)

    def distractor_position(self, index: int) -> np.ndarray:
        """(3,) m: centre of the `index`-th distractor of the scene variation, world frame (ground truth)."""
        names = tuple(self._distractor_rest_heights)
        if not 0 <= index < len(names):
            raise ConfigError(f"this world has {len(names)} distractor(s), no distractor {index}")
        qpos, _ = self._distractor_addresses[names[index]]
        return self.data.qpos[qpos : qpos + 3].copy()

    def place_arm(self, positions: np.ndarray) -> None:
        """Put the arm at `positions` (D,), at rest and holding there (a world that follows another robot's joints)."""
        positions = np.asarray(positions, dtype=np.float64)
        self.data.qpos[self._qpos_addresses] = positions
        self.data.qvel[self._dof_addresses] = 0.0
        _satisfy_joint_equalities(self.model, self.data)
        self.data.ctrl[self._actuator_ids] = positions
        self._executor.hold(positions)
        mujoco.mj_forward(self.model, self.data)

    # --- the robot interface: joint states, images, trajectories ---

    def joint_positions(self) -> np.ndarray:
        """(D,) measured joint positions (rad / m)."""
        return self.data.qpos[self._qpos_addresses].copy()

    def joint_velocities(self) -> np.ndarray:
        """(D,) measured joint velocities (rad/s / m/s)."""
        return self.data.qvel[self._dof_addresses].copy()

    def render_cameras(self) -> dict[str, np.ndarray]:
        """Camera name -> (H, W, 3) uint8 RGB image of the current state."""
        if self._renderer is None:
            raise ConfigError("this SimWorld was created with render=False: create it with render=True for images")
        images = {}
        for name in self.camera_names:
            self._renderer.update_scene(self.data, camera=name)
            images[name] = self._renderer.render()
        return images

    def send_trajectory(self, trajectory: JointTrajectory) -> None:
        """Replace the trajectory of the controller owning its joints, as a goal to joint_trajectory_controller does;
        TrajectoryError if rejected."""
        self._executor.accept(trajectory, self.time)

    def desired_joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, velocities), each (D,): what the trajectory executor asks of the arm right now."""
        return self._executor.sample(self.time)

    def advance(self, duration_s: float) -> None:
        """Simulate `duration_s` more seconds, updating the servo setpoints from the trajectory every physics step."""
        if duration_s < 0:
            raise ValueError(f"duration_s must be >= 0, got {duration_s}")
        # Steps are counted against the total requested time, so that repeated advance(1/30) does not drift.
        self._requested_time += duration_s
        half_step = self.model.opt.timestep / 2
        while self.data.time < self._requested_time - half_step:
            positions, velocities = self._executor.sample(self.data.time)
            self.data.ctrl[self._actuator_ids] = positions + self._velocity_feedforward_s * velocities
            mujoco.mj_step(self.model, self.data)
        # Positions, contacts and rendering all describe the state after the last step.
        mujoco.mj_forward(self.model, self.data)

    def close(self) -> None:
        """Free the renderer's GL context. The world cannot render afterwards."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> SimWorld:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- ground truth, for success checks and scripted experts ---

    def cube_pose(self, color: str) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,) m, rotation matrix (3, 3)) of the `color` cube's centre, world frame."""
        address = self._cube_qpos_addresses[self._checked_cube(color)]
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, self.data.qpos[address + 3 : address + 7])
        return self.data.qpos[address : address + 3].copy(), rotation.reshape(3, 3)

    def place_cube(self, color: str, position: np.ndarray, *, yaw: float = 0.0) -> None:
        """Put the `color` cube's centre at `position` (3,) m, turned `yaw` rad about the vertical, at rest.

        For setting up scenes and tests; nothing a robot could do.
        """
        self._write_cube_pose(self._checked_cube(color), position, yaw)
        mujoco.mj_forward(self.model, self.data)

    def _write_cube_pose(self, color: str, position: np.ndarray | tuple[float, float, float], yaw: float) -> None:
        _write_free_pose(self.data, self._cube_qpos_addresses[color], self._cube_dof_addresses[color], position, yaw)

    def cube_height_above_rest(self, color: str) -> float:
        """How far (m) the `color` cube's centre is above where it would rest on the table."""
        return float(self.cube_pose(color)[0][2] - self.cube_size_m / 2)

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,) m, rotation matrix (3, 3)) of the tool centre point; its +z axis points out of the jaws."""
        return self.data.site_xpos[self._tcp_site].copy(), self.data.site_xmat[self._tcp_site].reshape(3, 3).copy()

    def gripper_touches(self, color: str) -> bool:
        """Whether any part of the gripper (hand, jaws, fingers) is in contact with the `color` cube."""
        return bool(self._contact_partners(self._cube_geoms[self._checked_cube(color)]) & self._gripper_geoms)

    def gripper_holds(self, color: str) -> bool:
        """Whether both jaws are in contact with the `color` cube."""
        partners = self._contact_partners(self._cube_geoms[self._checked_cube(color)])
        return all(jaw in partners for jaw in self._jaw_geoms)

    def _contact_partners(self, geom: int) -> set[int]:
        """Ids of the geoms in contact with `geom`."""
        pairs = self.data.contact.geom[: self.data.ncon]
        return set(pairs[pairs[:, 0] == geom, 1].tolist()) | set(pairs[pairs[:, 1] == geom, 0].tolist())

    def _checked_cube(self, color: str) -> str:
        if color not in self._cube_qpos_addresses:
            raise ConfigError(f"this world has no {color} cube.{did_you_mean(color, self.cube_colors)}")
        return color


def _write_free_pose(data: mujoco.MjData, qpos: int, dof: int, position, yaw: float) -> None:
    """A free body's pose: `position` (3,) m, turned `yaw` rad about the vertical, at rest."""
    data.qpos[qpos : qpos + 3] = position
    data.qpos[qpos + 3 : qpos + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
    data.qvel[dof : dof + 6] = 0.0


def _make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    try:
        return mujoco.Renderer(model, height, width)
    except mujoco.FatalError as error:
        # Typically mujoco was imported before vla_ros.sim set MUJOCO_GL, and picked a windowing backend.
        raise ConfigError(
            f"MuJoCo cannot render ({error}); MUJOCO_GL is {os.environ.get('MUJOCO_GL')!r} now, but MuJoCo reads it "
            "when first imported: set MUJOCO_GL=egl (or osmesa) in the environment, or import vla_ros.sim before "
            "mujoco, or pass render=False"
        ) from error


def _checked_colors(colors: tuple[str, ...]) -> tuple[str, ...]:
    colors = tuple(colors)
    if not colors:
        raise ConfigError("a world needs at least one cube colour", key="colors")
    for color in colors:
        if color not in CUBE_COLORS:
            raise ConfigError(f"no cube colour '{color}'.{did_you_mean(color, CUBE_COLORS)}", key="colors")
    if len(set(colors)) != len(colors):
        raise ConfigError(f"colours repeat: {list(colors)}; each colour names one cube", key="colors")
    return colors


def _add_cubes(spec: mujoco.MjSpec, colors: tuple[str, ...], robot: SimRobot) -> None:
    """One free cube per colour, in a row across the workspace until a task's layout places them."""
    half = robot.cube_size_m / 2
    cube_class = spec.find_default("cube")
    radius = (robot.workspace.min_radius_m + robot.workspace.max_radius_m) / 2
    for i, color in enumerate(colors):
        y = (i - (len(colors) - 1) / 2) * robot.workspace.min_spacing_m
        body = spec.worldbody.add_body(name=f"cube_{color}", pos=[radius, y, half])
        body.add_freejoint(name=f"cube_{color}")
        body.add_geom(default=cube_class, name=f"cube_{color}", size=[half] * 3, rgba=[*CUBE_COLORS[color], 1.0])


def _subtree_geoms(model: mujoco.MjModel, root_body: int) -> frozenset[int]:
    """Ids of the geoms on `root_body` and all its descendants."""
    bodies = {root_body}
    # MuJoCo numbers bodies so that parents come before their children.
    for body in range(root_body + 1, model.nbody):
        if model.body_parentid[body] in bodies:
            bodies.add(body)
    return frozenset(geom for geom in range(model.ngeom) if model.geom_bodyid[geom] in bodies)


def _satisfy_joint_equalities(model: mujoco.MjModel, data: mujoco.MjData) -> None:
    """Set each joint that an equality ties to another (the Panda's mirrored finger) to its constrained value.

    Without this, a reset to a pose that violates the constraint makes the solver snap the joint back violently.
    """
    for eq in range(model.neq):
        if model.eq_type[eq] != mujoco.mjtEq.mjEQ_JOINT:
            continue
        follower, leader = model.eq_obj1id[eq], model.eq_obj2id[eq]
        leader_position = data.qpos[model.jnt_qposadr[leader]] - model.qpos0[model.jnt_qposadr[leader]]
        coefficients = model.eq_data[eq, :5]
        offset = sum(c * leader_position**power for power, c in enumerate(coefficients))
        data.qpos[model.jnt_qposadr[follower]] = model.qpos0[model.jnt_qposadr[follower]] + offset
