"""ObservationAssembler: merging joint states by name, stamp checks, staleness, the reference time, the joint state
history, camera sync, and a property test."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vla_ros.core.embodiment import JointStateSource, available_robots, load_embodiment
from vla_ros.core.errors import ConfigError, ObservationError
from vla_ros.core.observation import COUNTERS, AssemblerConfig, Drop, ObservationAssembler

ARM, GRIPPER = "/arm/joint_states", "/gripper/joint_states"
JOINTS = ("a1", "a2", "g")


def config(**overrides) -> AssemblerConfig:
    arguments = dict(
        joint_names=JOINTS,
        joint_state_sources=(JointStateSource(ARM), JointStateSource(GRIPPER)),
        cameras=("front", "wrist"),
    )
    arguments.update(overrides)
    return AssemblerConfig(**arguments)


def image(value: int = 0) -> np.ndarray:
    """A tiny RGB image whose pixels carry `value`, so tests can tell which one was picked."""
    return np.full((2, 3, 3), value, dtype=np.uint8)


def feed(assembler: ObservationAssembler, t: float = 1.0, *, a=(0.1, 0.2), g=0.3, images=True) -> None:
    """A complete, consistent set of messages stamped `t`."""
    assert assembler.add_joint_state(ARM, t, ["a1", "a2"], list(a)) is None
    assert assembler.add_joint_state(GRIPPER, t, ["g"], [g]) is None
    if images:
        for camera in assembler.config.cameras:
            assert assembler.add_image(camera, t, image(7)) is None


def ready(t: float = 1.0, **overrides) -> ObservationAssembler:
    assembler = ObservationAssembler(config(**overrides))
    feed(assembler, t)
    return assembler


# -- config ---------------------------------------------------------------------------------------------------------


def test_from_embodiment_takes_joints_topics_and_cameras():
    panda = load_embodiment("panda")
    cfg = AssemblerConfig.from_embodiment(panda, sync_tolerance_s=0.02)
    assert cfg.joint_names == panda.joint_names
    assert cfg.joint_state_sources == (JointStateSource("/joint_states"),)
    assert cfg.cameras == ("front", "wrist")
    assert cfg.sync_tolerance_s == 0.02


@pytest.mark.parametrize("robot", available_robots())
def test_every_shipped_robot_assembles_its_example_observation(robot):
    embodiment = load_embodiment(robot)
    example = embodiment.example_observation(seed=3, stamp=2.0)
    assembler = ObservationAssembler(AssemblerConfig.from_embodiment(embodiment))
    for source in embodiment.ros.joint_state_topics:  # each topic reports its joints without its prefix
        mine = [(n, p) for n, p in zip(example.joint_names, example.joint_positions, strict=True)
                if n.startswith(source.prefix)]
        names = [n[len(source.prefix):] for n, _ in reversed(mine)]
        assert assembler.add_joint_state(source.topic, 2.0, names, [p for _, p in reversed(mine)]) is None
    for camera, frame in example.images.items():
        assert assembler.add_image(camera, 2.0, frame) is None
    observation = assembler.assemble(2.0, "go")
    assert observation is not None, assembler.last_hold_reason
    assert observation.joint_names == embodiment.joint_names
    np.testing.assert_array_equal(observation.joint_positions, example.joint_positions)
    assert observation.images.keys() == example.images.keys()


def test_from_embodiment_rejects_unknown_override():
    with pytest.raises(ConfigError, match="no field 'sync_tolerance'.*Did you mean 'sync_tolerance_s'"):
        AssemblerConfig.from_embodiment(load_embodiment("so101"), sync_tolerance=0.1)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"joint_names": ()}, "joint_names must name at least one"),
        ({"joint_names": ("a", "a")}, r"joint_names lists \['a'\] more than once"),
        ({"joint_names": "a1"}, "sequence of names"),
        ({"joint_state_sources": ()}, "at least one topic"),
        ({"joint_state_sources": ("/joint_states",)}, "must be a JointStateSource"),
        ({"joint_state_sources": (JointStateSource(ARM), JointStateSource(ARM))}, "more than once"),
        ({"cameras": ("wrist", ARM)}, "name both a joint state topic and a camera"),
        ({"sync_tolerance_s": -0.1}, r"sync_tolerance_s must be >= 0 s, got -0.1"),
        ({"sync_tolerance_s": math.nan}, "sync_tolerance_s must be a finite number"),
        ({"joint_state_timeout_s": 0}, "0 does not mean off: use None"),
        ({"camera_timeout_s": -1.0}, r"camera_timeout_s must be > 0 s or None \(off\), got -1.0"),
        ({"clock_jump_s": 0.0}, "clock_jump_s must be > 0 s"),
        ({"buffer_size": 0}, "buffer_size must be an integer >= 1, got 0"),
        ({"buffer_size": 2.5}, "buffer_size must be an integer"),
        ({"max_future_s": -0.01}, "max_future_s must be >= 0"),
        ({"joint_history_s": 0.0}, "joint_history_s must be > 0 s, got 0.0"),
        ({"joint_history_s": None}, "joint_history_s must be a finite number of seconds > 0, got None"),
    ],
)
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(ConfigError, match=match):
        config(**overrides)


def test_config_accepts_off_timeouts_and_lists():
    cfg = config(joint_names=["a1", "a2", "g"], cameras=[], joint_state_timeout_s=None, camera_timeout_s=None)
    assert cfg.joint_names == JOINTS and cfg.cameras == ()
    assert cfg.joint_state_timeout_s is None and cfg.camera_timeout_s is None


# -- joint states: merging by name ----------------------------------------------------------------------------------


def test_merges_arm_and_gripper_topics_in_embodiment_order():
    assembler = ready()
    observation = assembler.assemble(1.01, "pick the cube")
    assert observation is not None
    assert observation.joint_names == JOINTS
    assert observation.joint_positions.dtype == np.float64
    np.testing.assert_array_equal(observation.joint_positions, [0.1, 0.2, 0.3])
    assert observation.stamp == 1.0
    assert set(observation.images) == {"front", "wrist"}
    assert observation.instruction == "pick the cube"
    positions, age = assembler.measured_positions(1.05)
    np.testing.assert_array_equal(positions, [0.1, 0.2, 0.3])
    assert age == pytest.approx(0.05)


def test_names_are_matched_whatever_their_order():
    assembler = ObservationAssembler(config(joint_state_sources=(JointStateSource(ARM),)))
    assembler.add_joint_state(ARM, 1.0, ["g", "a2", "a1"], [3.0, 2.0, 1.0])
    positions, _ = assembler.measured_positions(1.0)
    np.testing.assert_array_equal(positions, [1.0, 2.0, 3.0])


def test_bimanual_prefixes_tell_identical_arms_apart():
    cfg = config(joint_names=("left_waist", "left_grip", "right_waist", "right_grip"), cameras=(),
                 joint_state_sources=(JointStateSource("/left/joint_states", prefix="left_"),
                                      JointStateSource("/right/joint_states", prefix="right_")))
    assembler = ObservationAssembler(cfg)
    assert assembler.add_joint_state("/right/joint_states", 1.0, ["grip", "waist"], [4.0, 3.0]) is None
    assert assembler.add_joint_state("/left/joint_states", 1.0, ["waist", "grip"], [1.0, 2.0]) is None
    observation = assembler.assemble(1.0, "fold")
    np.testing.assert_array_equal(observation.joint_positions, [1.0, 2.0, 3.0, 4.0])
    # A name that already carries the prefix is not a joint of this robot once prefixed again.
    drop = assembler.add_joint_state("/left/joint_states", 2.0, ["left_waist"], [9.0])
    assert drop.reason == "unknown_joint_names"
    assert "'left_left_waist'" in drop.message and "prefix 'left_'" in drop.message


def test_partial_messages_update_only_the_joints_they_name():
    assembler = ObservationAssembler(config(joint_state_sources=(JointStateSource(ARM),), cameras=()))
    assembler.add_joint_state(ARM, 1.0, ["a1", "a2", "g"], [1.0, 2.0, 3.0])
    assembler.add_joint_state(ARM, 1.1, ["a2"], [20.0])
    positions, age = assembler.measured_positions(1.1)
    np.testing.assert_array_equal(positions, [1.0, 20.0, 3.0])
    assert age == pytest.approx(0.1)  # the age of the oldest value
    assert assembler.assemble(1.1, "").stamp == 1.1  # the stamp of the newest


def test_unknown_names_are_ignored_next_to_known_ones_even_when_not_finite():
    assembler = ObservationAssembler(config())
    drop = assembler.add_joint_state(ARM, 1.0, ["a1", "mimic_finger", "a2"], [0.1, math.nan, 0.2])
    assert drop is None
    assembler.add_joint_state(GRIPPER, 1.0, ["g"], [0.3])
    np.testing.assert_array_equal(assembler.measured_positions(1.0)[0], [0.1, 0.2, 0.3])


def test_a_message_without_known_names_is_dropped_and_counted():
    assembler = ready()
    drop = assembler.add_joint_state(GRIPPER, 2.0, ["finger_left", "finger_right"], [0.5, 0.5])
    assert drop == Drop(GRIPPER, "unknown_joint_names", drop.message)
    assert GRIPPER in drop.message and "['finger_left', 'finger_right']" in drop.message
    assert "['a1', 'a2', 'g']" in drop.message
    assert assembler.counters["unknown_joint_names"] == 1
    assert assembler.drops == {GRIPPER: {"unknown_joint_names": 1}}
    np.testing.assert_array_equal(assembler.measured_positions(2.0)[0], [0.1, 0.2, 0.3])


def test_missing_joints_and_cameras_are_listed_while_waiting():
    assembler = ObservationAssembler(config())
    assert assembler.measured_positions(1.0) == (None, math.inf)
    assembler.add_joint_state(ARM, 1.0, ["a1", "a2"], [0.1, 0.2])
    assembler.add_image("front", 1.0, image())
    assert assembler.assemble(1.0, "") is None
    reason = assembler.last_hold_reason
    assert "joints ['g']" in reason and f"['{GRIPPER}']" in reason and "cameras ['wrist']" in reason
    assert assembler.measured_positions(1.0) == (None, math.inf)
    assert assembler.counters["hold_waiting"] == 1
    assembler.add_joint_state(GRIPPER, 1.0, ["g"], [0.3])
    assembler.add_image("wrist", 1.0, image())
    assert assembler.assemble(1.0, "") is not None
    assert assembler.last_hold_reason is None


@pytest.mark.parametrize(
    ("names", "positions", "reason"),
    [
        (["a1", "a2"], [0.5, math.nan], "non_finite_position"),
        (["a1", "a2"], [math.inf, 0.5], "non_finite_position"),
        (["a1", "a2"], [0.5], "length_mismatch"),
        (["a1"], [], "length_mismatch"),
        ([], [], "empty_message"),
        (["a1", "a1"], [0.5, 0.6], "duplicate_joint_names"),
        (["a1", "a2"], [[0.5], [0.6]], "invalid_message"),
        (["a1", "a2"], ["x", "y"], "invalid_message"),
        ("a1", [0.5], "invalid_message"),
    ],
)
def test_bad_messages_are_dropped_whole_and_the_previous_values_stay(names, positions, reason):
    assembler = ready()
    drop = assembler.add_joint_state(ARM, 2.0, names, positions)
    assert drop is not None and drop.reason == reason and drop.source == ARM
    assert ARM in drop.message
    assert assembler.counters[reason] == 1
    assert assembler.drops == {ARM: {reason: 1}}
    np.testing.assert_array_equal(assembler.measured_positions(1.0)[0], [0.1, 0.2, 0.3])
    # Nothing of the dropped message was taken, its stamp included: a good message at 2.0 still goes in.
    assert assembler.add_joint_state(ARM, 2.0, ["a1", "a2"], [1.0, 2.0]) is None


def test_non_finite_stamp_is_dropped():
    assembler = ready()
    assert assembler.add_joint_state(ARM, math.nan, ["a1", "a2"], [1.0, 2.0]).reason == "bad_stamp"
    assert assembler.add_image("wrist", math.inf, image()).reason == "bad_stamp"
    assert assembler.drops == {ARM: {"bad_stamp": 1}, "wrist": {"bad_stamp": 1}}


def test_unknown_topic_raises_naming_the_valid_ones():
    assembler = ObservationAssembler(config())
    with pytest.raises(ObservationError, match=r"unknown topic '/arm/joint_state'.*Did you mean '/arm/joint_states'"):
        assembler.add_joint_state("/arm/joint_state", 1.0, ["a1"], [0.0])


def test_overlapping_topics_never_roll_a_joint_back_in_time():
    assembler = ObservationAssembler(config(cameras=()))
    assembler.add_joint_state(ARM, 2.0, ["a1", "a2", "g"], [1.0, 2.0, 3.0])
    assert assembler.add_joint_state(GRIPPER, 1.5, ["g"], [30.0]) is None  # accepted: its topic's first message
    np.testing.assert_array_equal(assembler.measured_positions(2.0)[0], [1.0, 2.0, 3.0])
    assembler.add_joint_state(GRIPPER, 2.5, ["g"], [30.0])
    np.testing.assert_array_equal(assembler.measured_positions(2.5)[0], [1.0, 2.0, 30.0])


# -- stamps -----------------------------------------------------------------------------------------------------------


def test_out_of_order_and_duplicate_stamps_are_dropped_per_topic():
    assembler = ready(t=1.0)
    assert assembler.add_joint_state(ARM, 1.0, ["a1", "a2"], [5.0, 5.0]).reason == "duplicate_stamp"
    drop = assembler.add_joint_state(ARM, 0.9, ["a1", "a2"], [5.0, 5.0])
    assert drop.reason == "out_of_order" and "0.100 s older" in drop.message
    assert assembler.add_image("front", 0.95, image()).reason == "out_of_order"
    assert assembler.add_image("front", 1.0, image()).reason == "duplicate_stamp"
    # Each topic is ordered on its own: the gripper's stamps need not follow the arm's.
    assembler.add_joint_state(ARM, 1.2, ["a1", "a2"], [1.0, 2.0])
    assert assembler.add_joint_state(GRIPPER, 1.1, ["g"], [3.0]) is None
    assert assembler.drops == {ARM: {"duplicate_stamp": 1, "out_of_order": 1},
                               "front": {"out_of_order": 1, "duplicate_stamp": 1}}
    assert assembler.counters["duplicate_stamp"] == 2 and assembler.counters["out_of_order"] == 2
    np.testing.assert_array_equal(assembler.measured_positions(1.2)[0], [1.0, 2.0, 3.0])


def test_clock_jump_forgets_everything_and_accepts_the_message():
    assembler = ready(t=100.0)
    assert assembler.assemble(100.0, "") is not None
    assert assembler.add_joint_state(ARM, 0.5, ["a1", "a2"], [1.0, 2.0]) is None
    assert assembler.counters["clock_jump"] == 1
    assert assembler.assemble(0.5, "") is None
    assert "joints ['g']" in assembler.last_hold_reason and "['front', 'wrist']" in assembler.last_hold_reason
    assert assembler.ages(0.5) == {ARM: 0.0, GRIPPER: math.inf, "front": math.inf, "wrist": math.inf}
    feed(assembler, 0.6)
    assert assembler.assemble(0.6, "").stamp == 0.6
    assert assembler.counters["clock_jump"] == 1


def test_clock_jump_threshold():
    assembler = ready(t=10.0, clock_jump_s=1.0)
    assert assembler.add_joint_state(ARM, 9.0, ["a1", "a2"], [1.0, 2.0]).reason == "out_of_order"  # exactly 1 s
    assert assembler.add_image("wrist", 8.9, image()) is None  # more than 1 s before: a jump, seen by a camera
    assert assembler.counters["clock_jump"] == 1
    assert assembler.measured_positions(9.0) == (None, math.inf)


def test_future_stamps_hold_until_the_clocks_agree():
    assembler = ready(t=5.0, max_future_s=0.1)
    assert assembler.assemble(4.95, "") is not None  # 0.05 s ahead: clock offset within max_future_s
    assert assembler.assemble(4.0, "") is None
    reason = assembler.last_hold_reason
    assert f"joint state on '{ARM}' by 1.000 s" in reason and "camera 'wrist' by 1.000 s" in reason
    assert "use_sim_time" in reason
    assert assembler.counters["hold_future_stamp"] == 1
    positions, age = assembler.measured_positions(4.0)
    assert positions is not None and math.isnan(age)
    assert assembler.assemble(5.0, "") is not None


def test_now_must_be_finite():
    with pytest.raises(ObservationError, match="now must be a finite time"):
        ready().assemble(math.nan, "")


# -- staleness and recovery -------------------------------------------------------------------------------------------


def test_stale_joint_state_holds_naming_the_topic_and_recovers():
    assembler = ready(t=1.0, joint_state_timeout_s=0.2, camera_timeout_s=None, sync_tolerance_s=1.0)
    assembler.add_joint_state(ARM, 1.3, ["a1", "a2"], [1.0, 2.0])
    assert assembler.assemble(1.3, "") is None
    assert assembler.last_hold_reason == (f"joint state from '{GRIPPER}' is 0.300 s old (joints ['g']) "
                                          "(joint_state_timeout_s 0.2)")
    assert assembler.counters["hold_stale_joint_state"] == 1
    assembler.add_joint_state(GRIPPER, 1.3, ["g"], [3.0])
    observation = assembler.assemble(1.3, "")  # taken at the images' time, 1.0: the values then
    assert observation.stamp == 1.0
    np.testing.assert_array_equal(observation.joint_positions, [0.1, 0.2, 0.3])
    assert assembler.last_hold_reason is None
    for camera in ("front", "wrist"):
        assembler.add_image(camera, 1.3, image())
    observation = assembler.assemble(1.3, "")
    assert observation.stamp == 1.3
    np.testing.assert_array_equal(observation.joint_positions, [1.0, 2.0, 3.0])


def test_stale_camera_holds_naming_it_and_recovers():
    assembler = ready(t=1.0, joint_state_timeout_s=None, camera_timeout_s=0.5)
    feed(assembler, 1.6, images=False)
    assembler.add_image("front", 1.6, image())
    assert assembler.assemble(1.6, "") is None
    assert assembler.last_hold_reason == "camera 'wrist' is 0.600 s old (camera_timeout_s 0.5)"
    assert assembler.counters["hold_stale_camera"] == 1
    assembler.add_image("wrist", 1.6, image(9))
    observation = assembler.assemble(1.6, "")
    assert observation.images["wrist"][0, 0, 0] == 9


def test_timeouts_off_never_hold_for_age():
    assembler = ready(t=1.0, joint_state_timeout_s=None, camera_timeout_s=None)
    assert assembler.assemble(1000.0, "") is not None
    assert assembler.measured_positions(1000.0)[1] == pytest.approx(999.0)


def test_ages_per_topic_and_camera():
    assembler = ready(t=1.0)
    assembler.add_image("wrist", 1.5, image())
    assert assembler.ages(2.0) == pytest.approx({ARM: 1.0, GRIPPER: 1.0, "front": 1.0, "wrist": 0.5})


# -- cameras ----------------------------------------------------------------------------------------------------------


def test_picks_the_buffered_image_closest_to_the_reference_time():
    assembler = ObservationAssembler(config(sync_tolerance_s=0.05))
    feed(assembler, 1.0, images=False)
    feed(assembler, 1.1, images=False)
    assembler.add_image("front", 1.0, image(9))  # the older camera: t_ref = 1.0
    for k, t in enumerate([0.90, 0.97, 1.02, 1.10]):
        assembler.add_image("wrist", t, image(k))
    observation = assembler.assemble(1.1, "")
    assert observation.stamp == 1.0 and observation.images["front"][0, 0, 0] == 9
    assert observation.images["wrist"][0, 0, 0] == 2  # 1.02 is 0.02 away; 0.97 is 0.03 away


def test_equally_close_images_pick_the_newer():
    for tolerance in (0.4, 0.5):
        assembler = ObservationAssembler(config(sync_tolerance_s=tolerance, joint_state_timeout_s=None,
                                                camera_timeout_s=None))
        assembler.add_image("front", 1.0, image(9))
        assembler.add_image("wrist", 0.5, image(1))
        assembler.add_image("wrist", 1.5, image(2))
        feed(assembler, 1.0, images=False)
        observation = assembler.assemble(1.5, "")
        if tolerance == 0.4:
            assert observation is None and "camera 'wrist' is 0.500 s away from t_ref (closest image after it)" in (
                assembler.last_hold_reason)
        else:
            assert observation.stamp == 1.0 and observation.images["wrist"][0, 0, 0] == 2


def test_cameras_out_of_sync_with_each_other_hold_naming_the_camera_and_the_offset():
    assembler = ObservationAssembler(config(sync_tolerance_s=0.05))
    feed(assembler, 1.0, images=False)
    assembler.add_image("front", 1.0, image())
    assembler.add_image("wrist", 0.88, image())  # the older camera: t_ref = 0.88, front's image is 0.12 s after
    assert assembler.assemble(1.0, "") is None
    reason = assembler.last_hold_reason
    assert reason.startswith("camera 'front' is 0.120 s away from t_ref (closest image after it)")
    assert "sync_tolerance_s 0.05, t_ref 0.880 s, the latest image of camera 'wrist'" in reason
    assert "camera 'wrist' is" not in reason
    assert assembler.counters["hold_out_of_sync"] == 1
    assembler.add_image("wrist", 0.96, image())  # within tolerance of front's: in sync again
    observation = assembler.assemble(1.0, "")
    assert observation.stamp == 0.96  # 0.04 s before the only joint state snapshot: within tolerance, its values
    np.testing.assert_array_equal(observation.joint_positions, [0.1, 0.2, 0.3])


def test_buffer_keeps_only_the_newest_images():
    assembler = ObservationAssembler(config(buffer_size=2, sync_tolerance_s=0.01))
    assembler.add_image("front", 1.0, image())
    for t in (1.0, 1.1, 1.2):
        assembler.add_image("wrist", t, image())
    feed(assembler, 1.0, images=False)
    assert assembler.assemble(1.2, "") is None  # wrist's image stamped 1.0 was evicted
    assert "'wrist' is 0.100 s away" in assembler.last_hold_reason and "buffer_size 2" in assembler.last_hold_reason


@pytest.mark.parametrize(
    "bad",
    [np.zeros((3, 2, 2), dtype=np.uint8), np.zeros((2, 3, 3), dtype=np.float32), np.zeros((2, 3), dtype=np.uint8),
     np.zeros((0, 3, 3), dtype=np.uint8), [[0, 0, 0]]],
)
def test_bad_image_is_dropped_and_counted_per_camera(bad):
    assembler = ready(t=1.0)
    drop = assembler.add_image("wrist", 1.1, bad)
    assert drop.reason == "bad_image" and "camera 'wrist'" in drop.message
    assert assembler.drops == {"wrist": {"bad_image": 1}}
    assert assembler.ages(1.1)["wrist"] == pytest.approx(0.1)  # its stamp was not taken either


def test_unknown_camera_raises_naming_the_valid_ones():
    assembler = ObservationAssembler(config())
    with pytest.raises(ObservationError, match=r"unknown camera 'wirst'.*Valid choices: front, wrist.*'wrist'"):
        assembler.add_image("wirst", 1.0, image())


def test_robot_without_cameras():
    assembler = ObservationAssembler(config(cameras=()))
    feed(assembler, 1.0)
    assert assembler.assemble(1.0, "").images == {}


# -- reference time and joint state history ---------------------------------------------------------------------------


def joints(assembler: ObservationAssembler, *hundredths: int) -> None:
    """Joint states stamped k / 100 s on both topics: a1 = k, a2 = k**2, g = 0.5."""
    for k in hundredths:
        assert assembler.add_joint_state(ARM, k / 100, ["a1", "a2"], [k, k**2]) is None
        assert assembler.add_joint_state(GRIPPER, k / 100, ["g"], [0.5]) is None


def test_a_10_hz_camera_with_100_hz_joint_states_assembles_every_tick_at_the_image_time():
    """The newest image lags the newest joint state by 35 to 125 ms: paired with the newest joint state it would be
    out of sync most ticks. Taken at the image's time, every tick assembles, the joints interpolated there."""
    assembler = ObservationAssembler(config(cameras=("front",)))
    observations = {}
    lags = []
    for ms in range(1001):
        if ms % 10 == 0:
            joints(assembler, ms // 10)
        if ms % 100 == 40:  # 10 Hz camera stamped 5 ms past each 100 ms, arriving 35 ms after its stamp
            assert assembler.add_image("front", (ms - 35) / 1000, image(ms // 100)) is None
        if ms % 10 == 0 and ms >= 40:  # 100 Hz control ticks, from the first image on
            observation = assembler.assemble(ms / 1000, "")
            assert observation is not None, assembler.last_hold_reason
            observations[observation.stamp] = observation.joint_positions
            lags.append(ms / 1000 - observation.stamp)
    assert assembler.counters["assembled"] == 97 and assembler.counters["hold_out_of_sync"] == 0
    assert max(lags) > 2 * assembler.config.sync_tolerance_s
    assert sorted(observations) == [(100 * k + 5) / 1000 for k in range(10)]
    # Hand-computed: at 0.105 s, halfway between the snapshots at 0.10 s (a1 10, a2 100) and 0.11 s (11, 121).
    np.testing.assert_allclose(observations[0.105], [10.5, 110.5, 0.5], rtol=1e-12)
    np.testing.assert_allclose(observations[0.905], [90.5, 8190.5, 0.5], rtol=1e-12)  # (8100 + 8281) / 2
    np.testing.assert_allclose(observations[0.005], [0.5, 0.5, 0.5], rtol=1e-12)  # (0 + 1) / 2
    # The safety filter still gets the newest measurement.
    np.testing.assert_array_equal(assembler.measured_positions(1.0)[0], [100, 10000, 0.5])


def test_two_cameras_at_different_phases_are_taken_at_the_older_cameras_time():
    assembler = ObservationAssembler(config())
    joints(assembler, *range(90, 111))
    for t, k in ((0.95, 1), (1.00, 2), (1.05, 3)):  # front at 20 Hz
        assembler.add_image("front", t, image(k))
    for t, k in ((0.915, 11), (1.015, 12)):  # wrist at 10 Hz, another phase
        assembler.add_image("wrist", t, image(k))
    observation = assembler.assemble(1.1, "")
    assert observation.stamp == 1.015  # wrist has nothing at front's 1.05 yet
    np.testing.assert_allclose(observation.joint_positions, [101.5, (101**2 + 102**2) / 2, 0.5], rtol=1e-12)
    assert observation.images["wrist"][0, 0, 0] == 12 and observation.images["front"][0, 0, 0] == 2  # 1.00: 0.015 s
    assembler.add_image("wrist", 1.065, image(13))  # now front is the older camera
    observation = assembler.assemble(1.1, "")
    assert observation.stamp == 1.05
    np.testing.assert_array_equal(observation.joint_positions, [105, 105**2, 0.5])  # exactly on a snapshot
    assert observation.images["wrist"][0, 0, 0] == 13 and observation.images["front"][0, 0, 0] == 3


@pytest.mark.parametrize(
    ("hundredths", "image_stamp", "expected"),
    [
        ((100, 101, 102), 1.01, [101, 101**2, 0.5]),  # exactly on a snapshot: its values
        ((100, 101, 102), 1.0075, [100.75, 100**2 + 0.75 * (101**2 - 100**2), 0.5]),  # between two: interpolated
        ((100, 101, 102), 0.96, [100, 100**2, 0.5]),  # before the first, within tolerance: the first's values
        ((100, 101, 102), 1.06, [102, 102**2, 0.5]),  # after the last, within tolerance: the last's (no extrapolation)
        ((100, 101, 102), 0.94, "0.060 s after it (t_ref is older than the history"),
        ((100, 101, 102), 1.08, "0.060 s before it (t_ref is newer than the history: the joint states lag"),
        ((100, 120), 1.09, "0.090 s before it (t_ref falls in a gap of the joint states"),
    ],
)
def test_joint_positions_at_the_reference_time(hundredths, image_stamp, expected):
    assembler = ObservationAssembler(config(cameras=("front",), sync_tolerance_s=0.05))
    joints(assembler, *hundredths)
    assembler.add_image("front", image_stamp, image())
    observation = assembler.assemble(1.2, "")
    if isinstance(expected, str):
        assert observation is None
        assert assembler.last_hold_reason.startswith(
            f"joint state history does not cover the camera time t_ref {image_stamp:.3f} s: its nearest snapshot is")
        assert expected in assembler.last_hold_reason and "sync_tolerance_s 0.05" in assembler.last_hold_reason
        assert assembler.counters["hold_out_of_sync"] == 1
    else:
        assert observation.stamp == image_stamp
        np.testing.assert_allclose(observation.joint_positions, expected, rtol=1e-12)


def test_a_history_shorter_than_the_cameras_lag_holds_out_of_sync():
    for history_s in (0.1, 0.5):
        assembler = ObservationAssembler(config(cameras=("front",), joint_history_s=history_s))
        joints(assembler, *range(101))
        assembler.add_image("front", 0.7, image())  # 0.3 s behind the joint states
        observation = assembler.assemble(1.0, "")
        if history_s == 0.1:
            assert observation is None
            assert assembler.last_hold_reason == (
                "joint state history does not cover the camera time t_ref 0.700 s: its nearest snapshot is 0.200 s "
                "after it (t_ref is older than the history: raise joint_history_s, or the images lag too much; "
                "history 0.900 to 1.000 s, sync_tolerance_s 0.05, joint_history_s 0.1)")
            assert assembler.counters["hold_out_of_sync"] == 1
        else:
            np.testing.assert_array_equal(observation.joint_positions, [70, 4900, 0.5])


def test_history_records_complete_merged_states_and_the_later_arrival_wins():
    assembler = ObservationAssembler(config(cameras=("front",), joint_state_timeout_s=None))
    assembler.add_joint_state(ARM, 0.98, ["a1", "a2"], [9.0, 9.0])  # g unknown yet: no merged state, no snapshot
    assembler.add_joint_state(ARM, 1.0, ["a1", "a2"], [1.0, 1.0])
    assembler.add_joint_state(GRIPPER, 1.0, ["g"], [0.0])  # first snapshot: 1.0
    assembler.add_joint_state(ARM, 1.01, ["a1", "a2"], [2.0, 2.0])  # snapshot 1.01, g still 0
    assembler.add_joint_state(GRIPPER, 1.005, ["g"], [1.0])  # merged stamp stays 1.01: replaces that snapshot
    assembler.add_image("front", 0.99, image())  # before the first snapshot by 0.01 s: its values
    np.testing.assert_array_equal(assembler.assemble(1.01, "").joint_positions, [1.0, 1.0, 0.0])
    assembler.add_image("front", 1.005, image())
    np.testing.assert_allclose(assembler.assemble(1.01, "").joint_positions, [1.5, 1.5, 0.5], rtol=1e-12)
    assembler.add_image("front", 1.01, image())
    np.testing.assert_array_equal(assembler.assemble(1.01, "").joint_positions, [2.0, 2.0, 1.0])


def test_clock_jump_empties_the_history():
    assembler = ObservationAssembler(config(cameras=("front",)))
    joints(assembler, 1000, 1010)
    joints(assembler, 50, 60)  # 10 s back: a clock jump
    assert assembler.counters["clock_jump"] == 1
    assembler.add_image("front", 0.3, image())
    assert assembler.assemble(0.6, "") is None
    assert "history 0.500 to 0.600 s" in assembler.last_hold_reason
    assembler.add_image("front", 0.55, image())
    np.testing.assert_allclose(assembler.assemble(0.6, "").joint_positions, [55, (50**2 + 60**2) / 2, 0.5])


def test_reset_empties_the_history():
    assembler = ObservationAssembler(config(cameras=("front",), camera_timeout_s=None))
    joints(assembler, 100)
    assembler.reset()
    joints(assembler, 200)
    assembler.add_image("front", 1.0, image())  # the forgotten snapshot at 1.0 must not answer for it
    assert assembler.assemble(2.0, "") is None
    assert "history 2.000 to 2.000 s" in assembler.last_hold_reason


# -- inputs, outputs, reset -------------------------------------------------------------------------------------------


def test_inputs_are_not_modified_and_reused_buffers_do_not_leak_in():
    assembler = ObservationAssembler(config())
    names, positions = ["a2", "a1"], np.array([2.0, 1.0])
    frame = image(5)
    assembler.add_joint_state(ARM, 1.0, names, positions)
    assembler.add_joint_state(GRIPPER, 1.0, ("g",), (3.0,))
    assembler.add_image("front", 1.0, frame)
    assembler.add_image("wrist", 1.0, frame)
    assert names == ["a2", "a1"] and positions.tolist() == [2.0, 1.0] and frame.flags.writeable
    positions[:] = 99.0  # the node's message buffer, reused for the next message
    frame[:] = 99
    observation = assembler.assemble(1.0, "")
    np.testing.assert_array_equal(observation.joint_positions, [1.0, 2.0, 3.0])
    assert (observation.images["front"] == 5).all()
    assert not observation.images["front"].flags.writeable  # shared with the buffer: read-only
    observation.joint_positions[:] = -1.0  # the caller's copy
    np.testing.assert_array_equal(assembler.measured_positions(1.0)[0], [1.0, 2.0, 3.0])


def test_reset_forgets_data_but_keeps_counters():
    assembler = ready(t=1.0)
    assembler.add_image("wrist", 0.5, image())
    assembler.reset()
    assert assembler.measured_positions(1.0) == (None, math.inf)
    assert assembler.assemble(1.0, "") is None and "waiting" in assembler.last_hold_reason
    assert assembler.counters["out_of_order"] == 1
    feed(assembler, 0.2)  # earlier than before the reset: accepted, no clock jump
    assert assembler.assemble(0.2, "") is not None
    assert assembler.counters["clock_jump"] == 0


def test_counters_list_every_reason_from_zero():
    assembler = ObservationAssembler(config())
    assert dict(assembler.counters) == dict.fromkeys(COUNTERS, 0)
    assembler = ready()
    assembler.assemble(1.0, "")
    assert assembler.counters["assembled"] == 1


def test_callbacks_and_control_timer_may_run_in_parallel():
    assembler = ObservationAssembler(config(sync_tolerance_s=0.006, joint_state_timeout_s=None, camera_timeout_s=None))
    errors: list[BaseException] = []

    def publish(topic: str) -> None:
        try:
            for k in range(1, 301):
                if topic in (ARM, GRIPPER):
                    names = ["a1", "a2"] if topic == ARM else ["g"]
                    assembler.add_joint_state(topic, k * 0.01, names, [float(k)] * len(names))
                else:
                    assembler.add_image(topic, k * 0.01, image(k % 256))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(topic,)) for topic in (ARM, GRIPPER, "front", "wrist")]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        observation = assembler.assemble(3.0, "")
        if observation is not None:  # a1 and a2 always come in one message: a torn merge would split them
            assert observation.joint_positions[0] == observation.joint_positions[1]
    for thread in threads:
        thread.join()
    assert not errors
    observation = assembler.assemble(3.0, "")
    np.testing.assert_array_equal(observation.joint_positions, [300.0, 300.0, 300.0])
    assert observation.stamp == 3.0 and (observation.images["wrist"] == 300 % 256).all()


def test_instruction_must_be_a_string():
    with pytest.raises(ObservationError, match="instruction must be a string"):
        ready().assemble(1.0, None)


# -- property ---------------------------------------------------------------------------------------------------------

TOLERANCE = 0.05
BUFFER = 4
HISTORY = 0.25


@st.composite
def interleavings(draw):
    """Valid messages of two joint topics and two cameras in a random order, each topic's stamps increasing."""
    events = []
    next_stamp = {ARM: 0.0, GRIPPER: 0.0, "front": 0.0, "wrist": 0.0}
    for k in range(draw(st.integers(1, 30))):
        topic = draw(st.sampled_from(sorted(next_stamp)))
        stamp = next_stamp[topic] + draw(st.sampled_from([0.01, 0.02, 0.03, 0.05, 0.2]))
        next_stamp[topic] = stamp
        if topic == ARM:
            values = draw(st.lists(st.floats(-3, 3), min_size=2, max_size=2))
            pairs = draw(st.permutations([("a1", values[0]), ("a2", values[1]), ("unused", math.nan)]))
            events.append((topic, stamp, [n for n, _ in pairs], [v for _, v in pairs]))
        elif topic == GRIPPER:
            events.append((topic, stamp, ["g"], [draw(st.floats(0, 1))]))
        else:
            events.append((topic, stamp, k))
    return events


@settings(max_examples=200, deadline=None)
@given(interleavings())
def test_observations_are_taken_at_the_oldest_cameras_latest_image(events):
    assembler = ObservationAssembler(config(sync_tolerance_s=TOLERANCE, buffer_size=BUFFER, joint_state_timeout_s=None,
                                            camera_timeout_s=None, joint_history_s=HISTORY))
    values: dict[str, tuple[float, float]] = {}  # joint -> (stamp, value)
    history: list[tuple[float, list[float]]] = []  # the merged state after each message: (stamp, positions)
    buffers: dict[str, list[tuple[float, int]]] = {"front": [], "wrist": []}
    now = 0.0
    for message in events:
        if len(message) == 4:
            topic, stamp, names, positions = message
            assert assembler.add_joint_state(topic, stamp, names, positions) is None
            values.update({n: (stamp, v) for n, v in zip(names, positions, strict=True)
                           if n in JOINTS and stamp >= values.get(n, (-math.inf,))[0]})
            if len(values) == len(JOINTS):
                merged = (max(s for s, _ in values.values()), [values[n][1] for n in JOINTS])
                history = [h for h in history if h[0] < merged[0]] + [merged]
                kept = [h for h in history if h[0] > merged[0] - HISTORY]
                history = history[-len(kept) - 1:]  # and the newest one at or before merged stamp - HISTORY
        else:
            camera, stamp, k = message
            assert assembler.add_image(camera, stamp, image(k)) is None
            buffers[camera] = (buffers[camera] + [(stamp, k)])[-BUFFER:]
        now = max(now, stamp)
        observation = assembler.assemble(now, "task")
        if len(values) < len(JOINTS) or not all(buffers.values()):
            assert observation is None and assembler.last_hold_reason.startswith("waiting")
            event("waiting")
            continue
        t_ref = min(b[-1][0] for b in buffers.values())
        closest = {camera: min(reversed(b), key=lambda e: abs(e[0] - t_ref)) for camera, b in buffers.items()}
        if any(abs(s - t_ref) > TOLERANCE for s, _ in closest.values()):
            assert observation is None and "away from t_ref" in assembler.last_hold_reason
            event("out of sync: cameras")
            continue
        stamps = [s for s, _ in history]
        if min(abs(s - t_ref) for s in stamps) > TOLERANCE:
            assert observation is None
            assert assembler.last_hold_reason.startswith("joint state history does not cover the camera time")
            event("out of sync: joint state history")
            continue
        assert observation is not None
        event("assembled, joints interpolated" if stamps[0] < t_ref < stamps[-1] and t_ref not in stamps
              else "assembled, joints at a snapshot")
        assert observation.stamp == t_ref
        expected = [np.interp(t_ref, stamps, [p[j] for _, p in history]) for j in range(len(JOINTS))]
        np.testing.assert_allclose(observation.joint_positions, expected, rtol=0, atol=1e-12)
        for camera, (image_stamp, k) in closest.items():
            assert observation.images[camera][0, 0, 0] == k
            assert abs(image_stamp - observation.stamp) <= TOLERANCE
