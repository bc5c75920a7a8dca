"""The arms added to the simulator beyond the SO-101 and the Panda: their MJCF against the manufacturers' published
kinematics, their grippers and cameras, and the scripted expert solving a touch and a pick on each.

The kinematic tables below are copied from the manufacturers' documents, not from our MJCF, and evaluated here with
plain numpy, so a slip in a link length, a joint axis or a frame turn in the MJCF shows up as a pose mismatch:
- FR3: Franka's Craig (modified) DH table of the Franka robots, flange 0.107 m past joint 7.
- Gen3: Kinova's classic DH table for the 7-DoF Gen3 (user guide), base frame turned half a turn about x.
- xArm7: UFACTORY's modified DH table (docs.ufactory.cc, "Kinematic and Dynamic Parameters of xArm 7").
- ViperX 300 6DOF: Trossen's product-of-exponentials model (M and the screw axes of interbotix mr_descriptions).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from test_sim_experts import run_episode

import vla_ros.sim  # noqa: F401  (sets MUJOCO_GL, which MuJoCo reads when first imported, for the renderers here)

# isort: split
import mujoco

from vla_ros.core.errors import ConfigError
from vla_ros.core.trajectory import build_trajectory
from vla_ros.sim.experts import ScriptedExpert
from vla_ros.sim.robots import ROBOTS, SIM_ROBOTS
from vla_ros.sim.tasks import PickTask, TouchTask
from vla_ros.sim.world import ASSETS_DIR, SimWorld

NEW_ARMS = ("fr3", "gen3", "xarm7", "vx300s")
PI = math.pi


def standard_dh(alpha: float, a: float, d: float, theta: float) -> np.ndarray:
    """Classic DH: Rot_z(theta) Trans_z(d) Trans_x(a) Rot_x(alpha)."""
    ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
    return np.array([[ct, -st * ca, st * sa, a * ct], [st, ct * ca, -ct * sa, a * st], [0, sa, ca, d], [0, 0, 0, 1]])


def modified_dh(alpha: float, a: float, d: float, theta: float) -> np.ndarray:
    """Craig's (modified) DH: Rot_x(alpha) Trans_x(a) Rot_z(theta) Trans_z(d), alpha and a of the previous link."""
    ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
    return np.array(
        [[ct, -st, 0, a], [st * ca, ct * ca, -sa, -d * sa], [st * sa, ct * sa, ca, d * ca], [0, 0, 0, 1]]
    )


# (alpha_{i-1}, a_{i-1}, d_i) per joint, m and rad; theta_i = q_i.
FRANKA_MODIFIED_DH = [
    (0, 0, 0.333), (-PI / 2, 0, 0), (PI / 2, 0, 0.316), (PI / 2, 0.0825, 0),
    (-PI / 2, -0.0825, 0.384), (PI / 2, 0, 0), (PI / 2, 0.088, 0),
]
FRANKA_FLANGE_M = 0.107
XARM7_MODIFIED_DH = [
    (0, 0, 0.267), (-PI / 2, 0, 0), (PI / 2, 0, 0.293), (PI / 2, 0.0525, 0),
    (PI / 2, 0.0775, 0.3425), (PI / 2, 0, 0), (-PI / 2, 0.076, 0.097),
]
XARM7_BASE_HEIGHT_M = 0.15  # our riser (xarm7.xml), not a vendor figure
# (alpha_i, d_i, theta offset_i); every a_i is 0. Kinova writes the lengths as sums of the two half-links.
GEN3_STANDARD_DH = [
    (PI / 2, -(0.1564 + 0.1284), 0), (PI / 2, -(0.0054 + 0.0064), PI), (PI / 2, -(0.2104 + 0.2104), PI),
    (PI / 2, -(0.0064 + 0.0064), PI), (PI / 2, -(0.2084 + 0.1059), PI), (PI / 2, 0, PI),
    (PI, -(0.1059 + 0.0615), PI),
]
# Space-frame screw axes (omega, v) and the home pose M of ee_gripper_link.
VX300S_SCREWS = np.array([
    [0, 0, 1, 0, 0, 0], [0, 1, 0, -0.12705, 0, 0], [0, 1, 0, -0.42705, 0, 0.05955],
    [1, 0, 0, 0, 0.42705, 0], [0, 1, 0, -0.42705, 0, 0.35955], [1, 0, 0, 0, 0.42705, 0],
], dtype=float)
VX300S_M = np.array([[1, 0, 0, 0.536494], [0, 1, 0, 0], [0, 0, 1, 0.42705], [0, 0, 0, 1]], dtype=float)


def franka_flange(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(joint 7 frame, flange position) of a Franka arm at arm joints `q`."""
    frame = np.eye(4)
    for (alpha, a, d), angle in zip(FRANKA_MODIFIED_DH, q, strict=True):
        frame = frame @ modified_dh(alpha, a, d, angle)
    return frame, (frame @ [0, 0, FRANKA_FLANGE_M, 1])[:3]


def xarm7_flange(q: np.ndarray) -> np.ndarray:
    frame = np.eye(4)
    frame[2, 3] = XARM7_BASE_HEIGHT_M
    for (alpha, a, d), angle in zip(XARM7_MODIFIED_DH, q, strict=True):
        frame = frame @ modified_dh(alpha, a, d, angle)
    return frame


def gen3_flange(q: np.ndarray) -> np.ndarray:
    frame = np.diag([1.0, -1.0, -1.0, 1.0])  # Kinova's base-to-frame-0 transform: half a turn about x
    for (alpha, d, offset), angle in zip(GEN3_STANDARD_DH, q, strict=True):
        frame = frame @ standard_dh(alpha, 0.0, d, angle + offset)
    return frame


def screw_exponential(screw: np.ndarray, angle: float) -> np.ndarray:
    """exp([S] angle) for a unit-rotation screw axis S = (omega, v) (Rodrigues)."""
    omega, v = screw[:3], screw[3:]
    skew = np.array([[0, -omega[2], omega[1]], [omega[2], 0, -omega[0]], [-omega[1], omega[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * skew + (1 - math.cos(angle)) * skew @ skew
    translation = (np.eye(3) * angle + (1 - math.cos(angle)) * skew + (angle - math.sin(angle)) * skew @ skew) @ v
    transform = np.eye(4)
    transform[:3, :3], transform[:3, 3] = rotation, translation
    return transform


def vx300s_gripper(q: np.ndarray) -> np.ndarray:
    transform = np.eye(4)
    for screw, angle in zip(VX300S_SCREWS, q, strict=True):
        transform = transform @ screw_exponential(screw, angle)
    return transform @ VX300S_M


def arm_configurations(world: SimWorld, count: int) -> list[np.ndarray]:
    """Home, all zeros (clipped into the limits), and `count` seeded draws inside the middle 80% of each range."""
    robot = world.sim_robot
    arm = [name for name in robot.joint_names if name != robot.gripper_joint]
    lower, upper = np.array([world.model.joint(name).range for name in arm]).T
    home = np.array([robot.home[robot.joint_names.index(name)] for name in arm])
    rng = np.random.default_rng(7)
    margin = 0.1 * (upper - lower)
    draws = [rng.uniform(lower + margin, upper - margin) for _ in range(count)]
    return [home, np.clip(np.zeros(len(arm)), lower, upper), *draws]


def mjcf_pose(world: SimWorld, q: np.ndarray, *, body: str | None = None, site: str | None = None):
    """(position (3,), rotation (3, 3)) of `body` or `site` with the arm joints at `q`, on a scratch MjData."""
    robot, model = world.sim_robot, world.model
    data = mujoco.MjData(model)
    arm = [name for name in robot.joint_names if name != robot.gripper_joint]
    for name, value in zip(arm, q, strict=True):
        data.qpos[model.jnt_qposadr[model.joint(name).id]] = value
    mujoco.mj_kinematics(model, data)
    if body is not None:
        return data.body(body).xpos.copy(), data.body(body).xmat.reshape(3, 3).copy()
    return data.site(site).xpos.copy(), data.site(site).xmat.reshape(3, 3).copy()


@pytest.fixture(scope="module", params=NEW_ARMS)
def world(request) -> SimWorld:
    return SimWorld(request.param, render=False)


def test_every_new_arm_is_listed_as_simulated():
    assert set(NEW_ARMS) <= set(SIM_ROBOTS)


# Position to a tenth of a millimetre: the tables give millimetres, the URDFs' frame turns are 1.5708 rather than pi/2.
POSITION_TOLERANCE_M = 1e-4
ROTATION_TOLERANCE = 1e-3
# Kinova's DH table rounds the half-link lengths to 0.1 mm (5.4 + 6.4 mm where kortex_description has 5.375 + 6.375)
# and leaves out the URDF's 0.175 mm wrist offsets; our MJCF follows the URDF, and the two differ by up to 0.41 mm.
GEN3_POSITION_TOLERANCE_M = 6e-4


def test_fr3_joint_frames_follow_frankas_dh_table():
    world = SimWorld("fr3", render=False)
    for q in arm_configurations(world, 5):
        frame, flange = franka_flange(q)
        position, rotation = mjcf_pose(world, q, body="fr3_link7")
        np.testing.assert_allclose(position, frame[:3, 3], atol=POSITION_TOLERANCE_M)
        np.testing.assert_allclose(rotation, frame[:3, :3], atol=ROTATION_TOLERANCE)
        np.testing.assert_allclose(mjcf_pose(world, q, body="fr3_hand")[0], flange, atol=POSITION_TOLERANCE_M)


@pytest.mark.parametrize(
    ("robot", "published_flange", "flange_body", "position_tolerance_m"),
    [
        ("gen3", gen3_flange, "end_effector_link", GEN3_POSITION_TOLERANCE_M),
        ("xarm7", xarm7_flange, "link7", POSITION_TOLERANCE_M),
    ],
    ids=["gen3-kinova-dh", "xarm7-ufactory-dh"],
)
def test_flange_follows_the_vendors_dh_table(robot, published_flange, flange_body, position_tolerance_m):
    world = SimWorld(robot, render=False)
    for q in arm_configurations(world, 5):
        expected = published_flange(q)
        position, rotation = mjcf_pose(world, q, body=flange_body)
        np.testing.assert_allclose(position, expected[:3, 3], atol=position_tolerance_m)
        np.testing.assert_allclose(rotation, expected[:3, :3], atol=ROTATION_TOLERANCE)


def test_vx300s_tool_centre_point_is_trossens_ee_gripper_link():
    world = SimWorld("vx300s", render=False)
    for q in arm_configurations(world, 5):
        expected = vx300s_gripper(q)
        position, rotation = mjcf_pose(world, q, site="tcp")
        np.testing.assert_allclose(position, expected[:3, 3], atol=POSITION_TOLERANCE_M)
        # The TCP frame's z axis (out of the fingers) is ee_gripper_link's x, its y (across the fingers) the same y.
        np.testing.assert_allclose(rotation[:, 2], expected[:3, 0], atol=ROTATION_TOLERANCE)
        np.testing.assert_allclose(rotation[:, 1], expected[:3, 1], atol=ROTATION_TOLERANCE)


def test_the_kinematic_check_would_catch_a_wrong_link_length():
    """The comparison is sharp: lengthening one Gen3 link by two millimetres breaks it."""
    spec = mujoco.MjSpec.from_file(str(ASSETS_DIR / "gen3.xml"))
    forearm = spec.body("forearm_link")
    forearm.pos = forearm.pos + np.array([0.0, 0.002, 0.0])
    model = spec.compile()
    data = mujoco.MjData(model)
    q = np.array([0.3, 0.5, -0.4, 1.2, 0.2, -0.7, 0.1])
    for i, name in enumerate(f"joint_{k}" for k in range(1, 8)):
        data.qpos[model.jnt_qposadr[model.joint(name).id]] = q[i]
    mujoco.mj_kinematics(model, data)
    assert np.abs(data.body("end_effector_link").xpos - gen3_flange(q)[:3, 3]).max() > GEN3_POSITION_TOLERANCE_M


def test_the_gripper_opens_wide_enough_and_closes_shut(world):
    """Driven open the jaws clear a cube with room to spare; driven closed (nothing between them) they meet."""
    robot = world.sim_robot
    jaws = [world.model.geom(name).id for name in robot.jaw_geoms]
    closing_axis = 1  # the hand's y axis, in every jaw geom's frame here

    def jaw_gap_after_moving_to(gripper: float) -> float:
        target = np.array(robot.home)
        target[robot.gripper_index] = gripper
        world.send_trajectory(build_trajectory(world.joint_names, target, 0.5))
        world.advance(2.0)
        distance = np.linalg.norm(world.data.geom_xpos[jaws[0]] - world.data.geom_xpos[jaws[1]])
        return float(distance - sum(world.model.geom_size[jaw][closing_axis] for jaw in jaws))

    world.reset(TouchTask("red"), seed=0)
    assert jaw_gap_after_moving_to(robot.gripper_open) > robot.cube_size_m + 0.02
    assert jaw_gap_after_moving_to(robot.gripper_closed) < 0.005


@pytest.mark.parametrize("task", [TouchTask("red"), PickTask("green")], ids=lambda task: task.instruction)
def test_the_expert_solves_touch_and_pick(world, task):
    assert run_episode(world, task, seed=11).success


@pytest.mark.parametrize("robot", SIM_ROBOTS)
def test_the_expert_touches_within_half_the_time_limit(robot):
    """The touch time limit is a few times what the expert needs, so that a policy imitating it has time to spare.

    A start pose far from every top-down grasp fails this: the gen3 at Kinova's Home needed 7.4 of the 10 s.
    """
    world = SimWorld(robot, render=False)
    task = TouchTask("red")
    for seed in range(3):
        assert run_episode(world, task, seed).success
        assert world.time <= task.max_duration_s / 2, f"{robot}, seed {seed}: the expert touched at {world.time:.2f} s"
    world.close()


def test_the_gen3_starts_ready_over_its_workspace_while_its_config_keeps_kinovas_home():
    world = SimWorld("gen3", render=False)
    world.reset(TouchTask("red"), seed=0)
    position, rotation = world.tcp_pose()
    workspace = world.sim_robot.workspace
    assert workspace.min_radius_m - 0.05 <= math.hypot(*position[:2]) <= workspace.max_radius_m
    assert rotation[2, 2] < -0.99  # the approach axis points straight down
    assert world.joint_positions()[world.sim_robot.gripper_index] == world.sim_robot.gripper_open
    assert world.sim_robot.embodiment.home[:7] == pytest.approx([0, 0.26, 3.14, -2.27, 0, 0.96, 1.57])
    world.close()


def test_a_start_pose_that_does_not_fit_the_arm_is_refused_by_joint():
    gen3 = ROBOTS["gen3"]
    with pytest.raises(ConfigError, match=r"start_pose has 7 values for 8 joints"):
        _ = replace(gen3, start_pose=gen3.start_pose[:7]).home
    with pytest.raises(ConfigError, match=r"start_pose puts joint 'joint_2' at 2.5, outside \[-2.24, 2.24\]"):
        _ = replace(gen3, start_pose=(0.0, 2.5, *gen3.start_pose[2:])).home


def visible_pixels(world: SimWorld, camera: str, geom: str) -> int:
    """How many pixels of a 120x160 image from `camera` show `geom` (MuJoCo's segmentation rendering)."""
    renderer = mujoco.Renderer(world.model, 120, 160)
    try:
        renderer.enable_segmentation_rendering()
        renderer.update_scene(world.data, camera=camera)
        return int((renderer.render()[..., 0] == world.model.geom(geom).id).sum())
    finally:
        renderer.close()


def test_the_front_camera_sees_every_corner_of_the_cube_sector(world):
    workspace = world.sim_robot.workspace
    world.reset(TouchTask("red"), seed=0)
    for radius in (workspace.min_radius_m, workspace.max_radius_m):
        for azimuth in (-workspace.max_azimuth_rad, workspace.max_azimuth_rad):
            corner = np.array([radius * math.cos(azimuth), radius * math.sin(azimuth), world.cube_size_m / 2])
            world.place_cube("red", corner)
            assert visible_pixels(world, "front", "cube_red") >= 10, f"the front camera misses a cube at {corner}"


def test_the_wrist_camera_sees_the_cube_the_expert_hovers_over(world):
    task = TouchTask("green")
    world.reset(task, seed=3)
    expert = ScriptedExpert(world, task)
    dt = 0.05
    for step in range(400):
        if step % 15 == 0:
            chunk = expert.plan(30, dt)
        world.send_trajectory(build_trajectory(world.joint_names, chunk[step % 15], dt))
        world.advance(dt)
        if expert.phase == "descend":
            break
    assert expert.phase == "descend"
    assert visible_pixels(world, "wrist", "cube_green") >= 0.01 * 120 * 160
