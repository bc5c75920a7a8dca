"""Observation assembly: joint states and camera images, arriving on several topics at different rates,
turned into time-consistent `RobotObservation`s, or a reason to hold.

The ROS node converts each message to plain values (header stamp in seconds, names, positions, an
(H, W, 3) uint8 RGB image) and hands them to an `ObservationAssembler`; at every control tick it asks
for an observation, or the measured positions alone, and gets None with a reason when there is no
usable one. All stamps and `now` are seconds on one clock (the header stamps' clock, normally the
node's clock, simulated or not).

Definitions used throughout:

- A joint's *value* is the position of the newest accepted message that named it (newest by stamp;
  equal stamps from two topics: the later arrival). Each value keeps that message's stamp and topic.
- The *merged joint state* is every embodiment joint's value, in embodiment order. Its **stamp** is the
  newest of its values' stamps (the instant of the latest information in it); its **age** at `now` is
  that of its oldest value, now - min(stamps), the conservative figure for staleness and for the
  safety filter. Values of one merged state may thus be up to `joint_state_timeout_s` apart.
- The *joint state history* records the merged joint state over time, as snapshots (stamp, positions).
  Once every joint has a value, each accepted joint state message adds a snapshot stamped with the
  merged state's stamp; a message that leaves that stamp unchanged (an older value from another topic,
  or one that changed nothing) replaces the newest snapshot instead (the later arrival wins), so
  snapshot stamps strictly increase. Of the snapshots at least `joint_history_s` older than the newest,
  only the newest is kept: once filled, the history spans at least `joint_history_s`.
  A clock jump and `reset` empty it.
- The *merged joint state at time t* is read from the history: at a snapshot's stamp, that snapshot;
  between two consecutive snapshots, per joint the linear interpolation between them; before the
  first snapshot or after the last, that snapshot as it is (no extrapolation). It is defined only
  when some snapshot lies within `sync_tolerance_s` of t (otherwise the history does not *cover* t:
  t is too old, too new, or in a gap of the joint states).
- An observation is taken at its *reference time* t_ref, the newest instant at which every camera has
  an image: the oldest of the cameras' latest image stamps (images are the slowest sensors); without
  cameras, the merged joint state's stamp. Its stamp is t_ref; its joint positions are the merged
  joint state at t_ref; its image of each camera is the buffered image whose stamp is closest to
  t_ref (equally close: the newer one), which must lie within `sync_tolerance_s` of t_ref.
- The *measured positions* are the merged joint state itself (the newest values, for the safety
  filter), not the state at t_ref.

Stamps are checked per topic (per joint-state topic, per camera): a stamp equal to the topic's latest
accepted one is a duplicate, an older one is out of order, both dropped; a stamp more than
`clock_jump_s` older means the clock was reset (a simulator restart): everything buffered is forgotten
and the message accepted. Future stamps cannot be judged on arrival (no clock is passed in); they
are judged by `assemble`/`measured_positions`, see `AssemblerConfig.max_future_s`.

A clock jump is counted in `counters["clock_jump"]`; a node that sees the count change should also
clear what depends on the old clock (the chunk scheduler's queue).

Thread safety: every public method holds one lock, so subscription callbacks and the control timer
may run in parallel under a multi-threaded executor.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any

import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig, JointStateSource
from vla_ros.core.errors import ConfigError, ObservationError, did_you_mean
from vla_ros.core.features import RobotObservation
from vla_ros.core.images import check_rgb

DROP_REASONS = (
    "bad_stamp",  # the stamp is NaN or inf
    "empty_message",  # a joint state with no names and no positions
    "invalid_message",  # names that are not strings, positions that are not a 1-D numeric array
    "length_mismatch",  # len(names) != len(positions)
    "duplicate_joint_names",  # one message names a joint twice
    "unknown_joint_names",  # no name in the message (after the topic's prefix) is a joint of the embodiment
    "non_finite_position",  # NaN or inf position for a joint of the embodiment
    "bad_image",  # not an (H, W, 3) uint8 RGB image (see images.check_rgb)
    "duplicate_stamp",  # stamp equal to the latest accepted stamp of the same topic/camera
    "out_of_order",  # stamp older than the latest accepted one of the same topic/camera (by <= clock_jump_s)
)
HOLD_REASONS = (
    "waiting",  # some joint has never been reported, or some camera has sent no image yet
    "future_stamp",  # a joint state or image stamped more than max_future_s after `now`
    "stale_joint_state",  # a joint's value is older than joint_state_timeout_s
    "stale_camera",  # a camera's latest image is older than camera_timeout_s
    "out_of_sync",  # some camera has no image within sync_tolerance_s of t_ref, or the joint history misses t_ref
)
EVENTS = ("clock_jump", "assembled")
COUNTERS = DROP_REASONS + tuple(f"hold_{reason}" for reason in HOLD_REASONS) + EVENTS


def _seconds(name: str, value: Any, *, allow_none: bool = False, allow_zero: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    bound = ">= 0" if allow_zero else "> 0"
    off = " or None (off)" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number of seconds {bound}{off}, got {value!r}", key=name)
    if value < 0 or (value == 0 and not allow_zero):
        hint = "; 0 does not mean off: use None" if allow_none and value == 0 else ""
        raise ConfigError(f"{name} must be {bound} s{off}, got {value}{hint}", key=name)
    return float(value)


def _names(name: str, value: Any, *, allow_empty: bool) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{name} must be a sequence of names, got {value!r}", key=name)
    names = tuple(value)
    if not names and not allow_empty:
        raise ConfigError(f"{name} must name at least one entry, got none", key=name)
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{name} must be non-empty strings, got {list(names)}", key=name)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{name} lists {repeated} more than once: {list(names)}", key=name)
    return names


@dataclass(frozen=True)
class AssemblerConfig:
    """Settings of an `ObservationAssembler`; build it from an embodiment with `from_embodiment`.

    - `joint_names`: the embodiment's joints, in the order observations report them.
    - `joint_state_sources`: the joint state topics; each reported name is prefixed with the source's
      `prefix` before it is matched to `joint_names`.
    - `cameras`: the robot's camera names (may be empty). Camera names and topics must differ: both key
      `ages` and `drops`.
    - `sync_tolerance_s`: the farthest an image's stamp may be from the observation's reference time
      t_ref, and the farthest t_ref may be from the nearest snapshot of the joint state history. >= 0
      (0: stamps must match exactly, as in a simulator publishing both at once). t_ref is the oldest
      camera's latest image, so this bounds how far apart the cameras' frames may be: keep it above
      half the slowest camera's frame period (phases of unsynchronised cameras) and above half the
      joint states' period.
    - `joint_state_timeout_s`: hold when a joint's value is older; None = off. > 0.
    - `camera_timeout_s`: hold when a camera's latest image is older; None = off. > 0.
    - `clock_jump_s`: a stamp more than this before its topic's latest accepted stamp means the clock
      was reset: everything is forgotten and the message accepted. > 0.
    - `buffer_size`: images kept per camera for stamp matching. >= 1. Keep buffer_size * camera period
      above the lag of the oldest camera's latest image behind this camera's, or the matching image is
      evicted before it is needed.
    - `max_future_s`: how far a stamp may lie after `now` and still count as fresh (clock offset between
      the machines stamping and this node, e.g. a camera PC synchronised by NTP/chrony). A stamp
      further ahead means the clocks disagree (a publisher on wall time, this node on sim time, or
      the reverse): ages would be negative and staleness never detected, so `assemble` holds and
      `measured_positions` reports a NaN age (which the safety filter treats as stale). >= 0.
    - `joint_history_s`: how far back before the newest snapshot the joint state history reaches (s).
      > 0. Keep it above the cameras' lag behind the joint states (transport and decoding latency, plus
      one frame period of the slowest camera): t_ref older than the history holds with out_of_sync.
    """

    joint_names: tuple[str, ...]
    joint_state_sources: tuple[JointStateSource, ...]
    cameras: tuple[str, ...]
    sync_tolerance_s: float = 0.05
    joint_state_timeout_s: float | None = 0.2
    camera_timeout_s: float | None = 0.5
    clock_jump_s: float = 1.0
    buffer_size: int = 10
    max_future_s: float = 0.1
    joint_history_s: float = 1.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "joint_names", _names("joint_names", self.joint_names, allow_empty=False))
        set_(self, "cameras", _names("cameras", self.cameras, allow_empty=True))
        sources = self.joint_state_sources
        if isinstance(sources, JointStateSource) or not isinstance(sources, Sequence):
            raise ConfigError(f"joint_state_sources must be a sequence of JointStateSource, got {sources!r}",
                              key="joint_state_sources")
        sources = tuple(sources)
        if not sources:
            raise ConfigError("joint_state_sources needs at least one topic", key="joint_state_sources")
        for i, source in enumerate(sources):
            if not isinstance(source, JointStateSource) or not isinstance(source.topic, str) or not source.topic:
                raise ConfigError(f"joint_state_sources[{i}] must be a JointStateSource with a topic, got {source!r}",
                                  key="joint_state_sources")
            if not isinstance(source.prefix, str):
                raise ConfigError(f"joint_state_sources[{i}].prefix must be a string, got {source.prefix!r}",
                                  key="joint_state_sources")
        _names("joint_state_sources topics", [s.topic for s in sources], allow_empty=False)
        set_(self, "joint_state_sources", sources)
        clash = sorted({s.topic for s in sources} & set(self.cameras))
        if clash:
            raise ConfigError(f"{clash} name both a joint state topic and a camera: rename the camera", key="cameras")
        set_(self, "sync_tolerance_s", _seconds("sync_tolerance_s", self.sync_tolerance_s, allow_zero=True))
        for name in ("joint_state_timeout_s", "camera_timeout_s"):
            set_(self, name, _seconds(name, getattr(self, name), allow_none=True))
        set_(self, "clock_jump_s", _seconds("clock_jump_s", self.clock_jump_s))
        set_(self, "max_future_s", _seconds("max_future_s", self.max_future_s, allow_zero=True))
        set_(self, "joint_history_s", _seconds("joint_history_s", self.joint_history_s))
        if isinstance(self.buffer_size, bool) or not isinstance(self.buffer_size, Integral) or self.buffer_size < 1:
            raise ConfigError(f"buffer_size must be an integer >= 1, got {self.buffer_size!r}", key="buffer_size")
        set_(self, "buffer_size", int(self.buffer_size))

    @classmethod
    def from_embodiment(cls, embodiment: EmbodimentConfig, **overrides: Any) -> AssemblerConfig:
        """The embodiment's joints, joint state topics and camera names; `overrides` set any other field."""
        known = tuple(f.name for f in fields(cls))
        for key in overrides:
            if key not in known:
                raise ConfigError(f"AssemblerConfig has no field '{key}'." + did_you_mean(key, known), key=key)
        values: dict[str, Any] = {
            "joint_names": embodiment.joint_names,
            "joint_state_sources": embodiment.ros.joint_state_topics,
            "cameras": tuple(c.name for c in embodiment.cameras),
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class Drop:
    """Why one message was dropped: `source` (topic or camera), `reason` (one of DROP_REASONS), and a
    `message` for the operator. Log it once per (source, reason), then the count from `drops`."""

    source: str
    reason: str
    message: str


@dataclass(frozen=True)
class _Hold:
    reason: str  # one of HOLD_REASONS
    message: str


class ObservationAssembler:
    """Buffers joint states and images, and assembles time-consistent observations from them.

    `add_joint_state` and `add_image` return None when the message was accepted and a `Drop` when it was
    not (nothing of a dropped message is used: the previous values stay). `assemble` and
    `measured_positions` read what has been accepted.
    """

    def __init__(self, config: AssemblerConfig):
        self.config = config
        self._index = {name: i for i, name in enumerate(config.joint_names)}
        self._prefix = {s.topic: s.prefix for s in config.joint_state_sources}
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._drops: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self.last_hold_reason: str | None = None
        self._clear()

    # -- state ----------------------------------------------------------------------------------------------------

    def _clear(self) -> None:
        n = len(self.config.joint_names)
        self._positions = np.zeros(n)
        self._stamps = np.full(n, -np.inf)  # -inf: never reported
        self._sources: list[str | None] = [None] * n  # topic of each joint's value
        self._latest: dict[str, float] = {}  # topic or camera -> latest accepted stamp
        self._images: dict[str, deque[tuple[float, np.ndarray]]] = {
            camera: deque(maxlen=self.config.buffer_size) for camera in self.config.cameras
        }
        # The joint state history: snapshot stamps, strictly increasing, and the positions (n,) at each.
        self._history_stamps: deque[float] = deque()
        self._history_positions: deque[np.ndarray] = deque()

    def reset(self) -> None:
        """Forget every joint value, image and stamp, and the joint state history (after a clock reset, or on
        lifecycle deactivate).

        Counters are kept: they count since construction.
        """
        with self._lock:
            self._clear()
            self.last_hold_reason = None

    @property
    def counters(self) -> Mapping[str, int]:
        """Read-only view: how often each name in `COUNTERS` happened (drops, holds as hold_<reason>, events)."""
        return MappingProxyType(self._counters)

    @property
    def drops(self) -> Mapping[str, Mapping[str, int]]:
        """Snapshot: topic or camera -> drop reason -> count, only for reasons that happened."""
        with self._lock:
            return {source: dict(reasons) for source, reasons in self._drops.items()}

    def ages(self, now: float) -> dict[str, float]:
        """now - latest accepted stamp (s), per joint state topic and per camera; inf if none yet."""
        now = self._now(now)
        with self._lock:
            topics = [s.topic for s in self.config.joint_state_sources] + list(self.config.cameras)
            return {topic: now - self._latest.get(topic, -math.inf) for topic in topics}

    # -- input ------------------------------------------------------------------------------------------------------

    def add_joint_state(
        self, source: str, stamp: float, names: Sequence[str], positions: Sequence[float] | np.ndarray
    ) -> Drop | None:
        """Merge one joint state message of topic `source` (names as reported, positions in joint units).

        Names are matched after prefixing them with the source's prefix; names the embodiment lacks are
        ignored (their positions are not checked) as long as one known name is present. Returns None
        when accepted, else the `Drop` (also counted). Raises ObservationError for an unknown topic.
        """
        if source not in self._prefix:
            raise ObservationError(f"joint state from unknown topic '{source}': not in joint_state_sources."
                                   + did_you_mean(source, self._prefix))
        where = f"joint state on '{source}'"
        drop = self._check_stamp_value(source, where, stamp)
        if drop is None:
            parsed = self._parse_joint_state(source, where, names, positions)
            if isinstance(parsed, Drop):
                drop = parsed
        with self._lock:
            if drop is None:
                drop = self._check_order(source, where, float(stamp))
            if drop is not None:
                return self._count_drop(drop)
            indices, values = parsed
            stamp = float(stamp)
            self._latest[source] = stamp
            # Newest stamp wins per joint: a topic overlapping another cannot roll a joint back in time.
            newer = stamp >= self._stamps[indices]
            indices, values = indices[newer], values[newer]
            self._positions[indices] = values
            self._stamps[indices] = stamp
            for i in indices:
                self._sources[i] = source
            self._record_snapshot()
        return None

    def _record_snapshot(self) -> None:
        """Called under the lock after each accepted joint state: the merged state joins the history."""
        if np.isneginf(self._stamps).any():
            return  # no merged joint state until every joint has a value
        stamp = float(self._stamps.max())
        stamps, positions = self._history_stamps, self._history_positions
        if stamps and stamps[-1] == stamp:  # the merged stamp did not advance: the later arrival wins
            positions[-1] = self._positions.copy()
            return
        stamps.append(stamp)
        positions.append(self._positions.copy())
        # Keep the newest snapshot at or before stamp - joint_history_s, so the history spans joint_history_s.
        while len(stamps) >= 2 and stamps[1] <= stamp - self.config.joint_history_s:
            stamps.popleft()
            positions.popleft()

    def add_image(self, camera: str, stamp: float, image: np.ndarray) -> Drop | None:
        """Buffer one (H, W, 3) uint8 RGB image of `camera` (a copy is kept). Returns None when accepted,
        else the `Drop` (also counted). Raises ObservationError for an unknown camera."""
        if camera not in self._images:
            raise ObservationError(f"image from unknown camera '{camera}'." + did_you_mean(camera, self.config.cameras))
        where = f"camera '{camera}'"
        drop = self._check_stamp_value(camera, where, stamp)
        if drop is None:
            try:
                check_rgb(image, source=where)
            except ObservationError as exc:
                drop = Drop(camera, "bad_image", str(exc))
        if drop is None:
            kept = np.array(image, copy=True)  # the message buffer may be reused once the callback returns
            kept.flags.writeable = False  # shared by every observation that picks it: nobody may change it
        with self._lock:
            if drop is None:
                drop = self._check_order(camera, where, float(stamp))
            if drop is not None:
                return self._count_drop(drop)
            self._latest[camera] = float(stamp)
            self._images[camera].append((float(stamp), kept))
        return None

    def _check_stamp_value(self, source: str, where: str, stamp: Any) -> Drop | None:
        if isinstance(stamp, bool) or not isinstance(stamp, Real) or not math.isfinite(stamp):
            return Drop(source, "bad_stamp", f"{where}: stamp must be a finite number of seconds, got {stamp!r}")
        return None

    def _parse_joint_state(
        self, source: str, where: str, names: Any, positions: Any
    ) -> tuple[np.ndarray, np.ndarray] | Drop:
        if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            return Drop(source, "invalid_message", f"{where}: names must be a sequence of strings, got {names!r}")
        try:
            values = np.array(positions, dtype=np.float64)  # a copy: the message buffer may be reused
        except (TypeError, ValueError) as exc:
            return Drop(source, "invalid_message", f"{where}: positions must be numbers, got {positions!r}: {exc}")
        if values.ndim != 1:
            return Drop(source, "invalid_message", f"{where}: positions must be 1-D, got shape {values.shape}")
        if not names and values.size == 0:
            return Drop(source, "empty_message", f"{where}: message has no names and no positions")
        if len(names) != values.size:
            return Drop(source, "length_mismatch",
                        f"{where}: {len(names)} names but {values.size} positions; names {list(names)}")
        if len(set(names)) != len(names):
            repeated = sorted({n for n in names if names.count(n) > 1})
            return Drop(source, "duplicate_joint_names", f"{where}: names {repeated} appear more than once")
        prefix = self._prefix[source]
        known = [(k, self._index[prefix + name]) for k, name in enumerate(names) if prefix + name in self._index]
        if not known:
            shown = f" (as {[prefix + n for n in names]} with the topic's prefix '{prefix}')" if prefix else ""
            return Drop(source, "unknown_joint_names",
                        f"{where}: none of its names {list(names)}{shown} is a joint of this robot; expected some of "
                        f"{list(self.config.joint_names)}." + did_you_mean(prefix + names[0], self.config.joint_names)
                        + " Check the joint names, or the source's prefix.")
        slots = np.array([k for k, _ in known])
        indices = np.array([i for _, i in known])
        values = values[slots]
        bad = ~np.isfinite(values)
        if bad.any():
            reported = {names[slots[k]]: float(values[k]) for k in np.nonzero(bad)[0]}
            return Drop(source, "non_finite_position", f"{where}: non-finite positions {reported}")
        return indices, values

    def _check_order(self, source: str, where: str, stamp: float) -> Drop | None:
        """Called under the lock. Clears everything on a clock jump (the message is then accepted)."""
        latest = self._latest.get(source)
        if latest is None or stamp > latest:
            return None
        if latest - stamp > self.config.clock_jump_s:
            self._counters["clock_jump"] += 1
            self._clear()
            return None
        if stamp == latest:
            return Drop(source, "duplicate_stamp", f"{where}: stamp {stamp:.6f} s repeats the previous message's")
        return Drop(source, "out_of_order", f"{where}: stamp {stamp:.6f} s is {latest - stamp:.3f} s older than "
                                            f"the latest accepted one ({latest:.6f} s)")

    def _count_drop(self, drop: Drop) -> Drop:
        self._counters[drop.reason] += 1
        per_source = self._drops.setdefault(drop.source, {})
        per_source[drop.reason] = per_source.get(drop.reason, 0) + 1
        return drop

    # -- output -----------------------------------------------------------------------------------------------------

    def measured_positions(self, now: float) -> tuple[np.ndarray | None, float]:
        """(positions (n,) float64 in embodiment order, joint units; their age in s) of the merged joint state.

        (None, inf) until every joint has been reported. The age is that of the oldest value; NaN when
        a value is stamped more than `max_future_s` after `now` (clocks disagree: an age is meaningless).
        """
        now = self._now(now)
        with self._lock:
            if np.isneginf(self._stamps).any():
                return None, math.inf
            if self._stamps.max() > now + self.config.max_future_s:
                return self._positions.copy(), math.nan
            return self._positions.copy(), float(now - self._stamps.min())

    def assemble(self, now: float, instruction: str) -> RobotObservation | None:
        """The observation at `now`, or None (hold) with `last_hold_reason` saying why.

        The observation is taken at the reference time t_ref (the oldest camera's latest image; see the
        module's definitions): its stamp is t_ref, its joint positions the merged joint state at t_ref
        (interpolated in the joint state history), its images, per camera, the buffered image closest in
        stamp to t_ref. Hold reasons, checked in this order: `HOLD_REASONS`.
        """
        now = self._now(now)
        if not isinstance(instruction, str):
            raise ObservationError(f"instruction must be a string, got {type(instruction).__name__}")
        with self._lock:
            result = self._assemble(now)
            if isinstance(result, _Hold):
                self._counters[f"hold_{result.reason}"] += 1
                self.last_hold_reason = result.message
                return None
            self._counters["assembled"] += 1
            self.last_hold_reason = None
            stamp, positions, images = result
            return RobotObservation(stamp=stamp, joint_names=self.config.joint_names,
                                    joint_positions=positions, images=images, instruction=instruction)

    def _assemble(self, now: float) -> tuple[float, np.ndarray, dict[str, np.ndarray]] | _Hold:
        cfg = self.config
        missing_joints = [name for name, s in zip(cfg.joint_names, self._stamps, strict=True) if s == -np.inf]
        missing_cameras = [camera for camera, images in self._images.items() if not images]
        if missing_joints or missing_cameras:
            parts = []
            if missing_joints:
                silent = [s.topic for s in cfg.joint_state_sources if s.topic not in self._latest]
                parts.append(f"no joint state yet for joints {missing_joints}"
                             + (f" (topics not heard from: {silent})" if silent else ""))
            if missing_cameras:
                parts.append(f"no image yet from cameras {missing_cameras}")
            return _Hold("waiting", "waiting: " + "; ".join(parts))

        ahead = [f"joint state on '{topic}' by {self._latest[topic] - now:.3f} s" for topic in self._prefix
                 if self._latest.get(topic, -math.inf) > now + cfg.max_future_s]
        ahead += [f"camera '{camera}' by {self._latest[camera] - now:.3f} s" for camera in cfg.cameras
                  if self._latest[camera] > now + cfg.max_future_s]
        if ahead:
            return _Hold("future_stamp", f"stamps after now ({now:.3f} s, max_future_s {cfg.max_future_s}): "
                                         f"{', '.join(ahead)}; the publishers' clocks and this node's disagree "
                                         "(use_sim_time set on some nodes only?)")

        stale = self._stale_joints(now)
        if stale:
            return _Hold("stale_joint_state", stale)

        if cfg.camera_timeout_s is not None:
            stale_cameras = [f"camera '{camera}' is {now - self._latest[camera]:.3f} s old" for camera in cfg.cameras
                             if now - self._latest[camera] > cfg.camera_timeout_s]
            if stale_cameras:
                return _Hold("stale_camera", "; ".join(stale_cameras) + f" (camera_timeout_s {cfg.camera_timeout_s})")

        if cfg.cameras:
            reference = min(cfg.cameras, key=lambda camera: self._latest[camera])  # ties: the first listed
            t_ref = self._latest[reference]
            basis = f"t_ref {t_ref:.3f} s, the latest image of camera '{reference}'"
        else:
            t_ref = float(self._stamps.max())
            basis = f"t_ref {t_ref:.3f} s, the joint state's stamp"
        images: dict[str, np.ndarray] = {}
        far = []
        for camera, buffered in self._images.items():
            best_stamp, best_image = min(reversed(buffered), key=lambda entry: abs(entry[0] - t_ref))
            offset = best_stamp - t_ref
            if abs(offset) > cfg.sync_tolerance_s:
                side = "after" if offset > 0 else "before"
                far.append(f"camera '{camera}' is {abs(offset):.3f} s away from t_ref (closest image {side} it)")
            images[camera] = best_image
        if far:
            return _Hold("out_of_sync", "; ".join(far) + (
                f" (sync_tolerance_s {cfg.sync_tolerance_s}, {basis}, buffer_size {cfg.buffer_size})"))
        positions = self._positions_at(t_ref)
        if isinstance(positions, _Hold):
            return positions
        return t_ref, positions, images

    def stale_joints(self, now: float) -> str:
        """Which joints' values are older than joint_state_timeout_s at `now`, in words; "" if none."""
        with self._lock:
            return self._stale_joints(self._now(now))

    def _stale_joints(self, now: float) -> str:
        cfg = self.config
        if cfg.joint_state_timeout_s is None:
            return ""
        ages = now - self._stamps
        stale: dict[str, list[str]] = {}
        for name, age, topic in zip(cfg.joint_names, ages, self._sources, strict=True):
            if age > cfg.joint_state_timeout_s:
                stale.setdefault(topic, []).append(name)
        if not stale:
            return ""
        parts = [f"joint state from '{topic}' is {max(ages[self._index[n]] for n in names):.3f} s old "
                 f"(joints {names})" for topic, names in stale.items()]
        return "; ".join(parts) + f" (joint_state_timeout_s {cfg.joint_state_timeout_s})"

    def _positions_at(self, t: float) -> np.ndarray | _Hold:
        """The merged joint state at `t`, read from the history (see the module's definitions)."""
        stamps, positions, tolerance = self._history_stamps, self._history_positions, self.config.sync_tolerance_s
        after = bisect.bisect_left(stamps, t)  # stamps[after - 1] < t <= stamps[after]
        if after < len(stamps) and stamps[after] == t:
            return positions[after].copy()
        nearest = min((k for k in (after - 1, after) if 0 <= k < len(stamps)), key=lambda k: abs(stamps[k] - t))
        gap = stamps[nearest] - t
        if abs(gap) > tolerance:
            if after == 0:
                why = "t_ref is older than the history: raise joint_history_s, or the images lag too much"
            elif after == len(stamps):
                why = "t_ref is newer than the history: the joint states lag the cameras"
            else:
                why = "t_ref falls in a gap of the joint states"
            side = "after" if gap > 0 else "before"
            return _Hold("out_of_sync", f"joint state history does not cover the camera time t_ref {t:.3f} s: "
                                        f"its nearest snapshot is {abs(gap):.3f} s {side} it ({why}; history "
                                        f"{stamps[0]:.3f} to {stamps[-1]:.3f} s, sync_tolerance_s {tolerance}, "
                                        f"joint_history_s {self.config.joint_history_s})")
        if after == 0 or after == len(stamps):
            return positions[nearest].copy()  # beyond an end, within tolerance: no extrapolation
        t0, t1 = stamps[after - 1], stamps[after]
        w = (t - t0) / (t1 - t0)
        return (1.0 - w) * positions[after - 1] + w * positions[after]

    @staticmethod
    def _now(now: Any) -> float:
        if isinstance(now, bool) or not isinstance(now, Real) or not math.isfinite(now):
            raise ObservationError(f"now must be a finite time in seconds, got {now!r}")
        return float(now)
