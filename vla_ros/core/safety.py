"""The always-on safety filter between the policy and the robot.

Every command sent to an arm passes `SafetyFilter.filter`, once per control period. Whatever arrives —
a good target, NaN, nothing at all, a target from a stale observation, a jump across the workspace —
what leaves respects, for every joint and every step, with v = (command - last command) / period:

- position limits: lower <= command <= upper (see `reset` for an arm that starts outside them);
- |v| <= max_velocity;
- |v - last v| <= max_acceleration * period.

A filter that keeps those three at every step must also see limits coming: it cannot stop at a
position limit, or for a hold, in one step without breaking the acceleration limit. It therefore
bounds the speed towards each limit by `braking_speed`: the step plus the braking that follows it
(about v * period + v^2 / (2 * max_acceleration), computed exactly for discrete steps) must fit in
the distance left. From any state reached that way, braking at max_acceleration satisfies every
bound at once, so the three guarantees never conflict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from types import MappingProxyType

import numpy as np

from vla_ros.core.errors import ConfigError, VlaRosError


class SafetyError(VlaRosError):
    """The safety filter was used wrongly: before `reset`, or with an array of the wrong shape."""


HOLD_REASONS = (
    "bad_measurement",  # measured position has NaN or inf
    "stale_observation_hold",  # observation older than observation_timeout_s (or its age is NaN)
    "no_action_hold",  # target is None: nothing queued
    "nan_target",  # target has NaN or inf
)
INTERVENTIONS = HOLD_REASONS + (
    "tracking_error_capped",  # target moved to within measured +- max_tracking_error
    "approach_limited",  # slowed so as to arrive at a target that jumped without overshooting it
    "position_limited",  # target outside the limits, braking-distance bound active, or final clip
    "velocity_limited",  # |desired velocity| > max_velocity
    "acceleration_limited",  # desired velocity outside last velocity +- max_acceleration * period
)


def _joint_array(name: str, value: object, joint_names: tuple[str, ...]) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float64)  # a copy: later changes to the caller's array cannot leak in
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a numeric array, got {value!r}: {exc}", key=name) from exc
    if array.shape != (len(joint_names),):
        raise ConfigError(
            f"{name} has shape {array.shape}, expected ({len(joint_names)},) for joints {list(joint_names)}", key=name
        )
    if np.isnan(array).any():
        raise ConfigError(f"{name} is NaN for joints {_joints_where(np.isnan(array), joint_names)}", key=name)
    array.flags.writeable = False
    return array


def _joints_where(mask: np.ndarray, joint_names: tuple[str, ...]) -> list[str]:
    return [joint_names[i] for i in np.nonzero(mask)[0]]


def _positive_finite(name: str, array: np.ndarray, joint_names: tuple[str, ...]) -> None:
    bad = ~(np.isfinite(array) & (array > 0))
    if bad.any():
        values = {joint_names[i]: float(array[i]) for i in np.nonzero(bad)[0]}
        raise ConfigError(f"{name} must be finite and > 0 for every joint, got {values}", key=name)


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number of seconds > 0, got {value!r}", key=name)
    return float(value)


@dataclass(frozen=True, eq=False)
class SafetyConfig:
    """Limits and timeouts of a `SafetyFilter`. Arrays are (D,) in joint order, copied and made read-only.

    - `lower`, `upper`: position limits (rad or m); lower < upper; +-inf allowed (continuous joints).
    - `max_velocity` (units/s), `max_acceleration` (units/s^2): finite and > 0.
    - `control_period_s`: time between two `filter` calls; the velocity of a step is its change / this.
    - `max_tracking_error`: cap on |target - measured| per joint (finite, > 0); None = off.
    - `observation_timeout_s`: hold when the observation behind a target is older; None = off.
    - `dry_run`: compute everything as usual but mark reports so the caller publishes only a preview.

    `eq=False`: configs compare by identity, since array fields have no single truth value.
    """

    joint_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray
    control_period_s: float
    max_tracking_error: np.ndarray | None = None
    observation_timeout_s: float | None = 0.5
    dry_run: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.joint_names, str):
            raise ConfigError(f"joint_names must be a sequence of names, got the string {self.joint_names!r}")
        names = tuple(self.joint_names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"joint_names must be non-empty strings, got {list(names)}", key="joint_names")
        if len(set(names)) != len(names):
            repeated = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"joint_names repeat {repeated}: {list(names)}", key="joint_names")
        object.__setattr__(self, "joint_names", names)
        for name in ("lower", "upper", "max_velocity", "max_acceleration"):
            object.__setattr__(self, name, _joint_array(name, getattr(self, name), names))
        not_below = ~(self.lower < self.upper)
        if not_below.any():
            pairs = {names[i]: (float(self.lower[i]), float(self.upper[i])) for i in np.nonzero(not_below)[0]}
            raise ConfigError(f"lower must be < upper for every joint, got (lower, upper) = {pairs}", key="lower")
        _positive_finite("max_velocity", self.max_velocity, names)
        _positive_finite("max_acceleration", self.max_acceleration, names)
        object.__setattr__(self, "control_period_s", _positive_seconds("control_period_s", self.control_period_s))
        if self.max_tracking_error is not None:
            error = _joint_array("max_tracking_error", self.max_tracking_error, names)
            _positive_finite("max_tracking_error", error, names)
            object.__setattr__(self, "max_tracking_error", error)
        if self.observation_timeout_s is not None:
            timeout = _positive_seconds("observation_timeout_s", self.observation_timeout_s)
            object.__setattr__(self, "observation_timeout_s", timeout)
        if not isinstance(self.dry_run, bool):
            raise ConfigError(f"dry_run must be true or false, got {self.dry_run!r}", key="dry_run")


@dataclass(frozen=True)
class SafetyReport:
    """What the filter did to one command.

    `interventions` lists names from `INTERVENTIONS` (in that order), each at most once per step;
    `held` is true when a reason in `HOLD_REASONS` made the filter ignore the target; `dry_run` copies
    the config: the command must go to a preview only.
    """

    interventions: tuple[str, ...]
    held: bool
    dry_run: bool

    @property
    def intervened(self) -> bool:
        """True when the command differs from the target as given (or there was no usable target)."""
        return bool(self.interventions)


def braking_speed(distance: np.ndarray, max_acceleration: np.ndarray, period_s: float) -> np.ndarray:
    """Largest speed v >= 0 (units/s) this step from which the joint can still stop within `distance`.

    Stopping means braking at `max_acceleration` from the next step on: velocities v - b, v - 2b, ...
    (b = max_acceleration * period_s) until 0, so v qualifies when
    v*T + T * sum_k max(v - k*b, 0) <= distance. That travel is piecewise linear and convex in v; on
    [n*b, (n+1)*b] it is T*(n+1)*(v - n*b/2), whence v. About v*T + v^2/(2a) <= distance, but exact
    in discrete time, so a limit is reached exactly rather than approached forever.
    `distance` (D,) in units; 0 for distance <= 0, inf for an infinite one.
    """
    d = np.maximum(np.asarray(distance, dtype=np.float64), 0.0)
    b = np.asarray(max_acceleration, dtype=np.float64) * period_s
    with np.errstate(invalid="ignore"):
        n = np.floor((np.sqrt(1.0 + 8.0 * d / (b * period_s)) - 1.0) / 2.0)
        # Every piece's line lies below the convex travel curve, so solving any piece overestimates v
        # except the right one: the minimum over neighbouring pieces absorbs a rounded-off n.
        candidates = [d / (period_s * (m + 1.0)) + b * m / 2.0 for m in (np.maximum(n - 1.0, 0.0), n, n + 1.0)]
        speed = np.minimum.reduce(candidates)
    return np.where(np.isinf(d), np.inf, speed)


class SafetyFilter:
    """Makes every command respect position, velocity and acceleration limits, and holds on bad input.

    State: the last command (D,) and its velocity (D,), set by `reset` and advanced by every `filter`,
    dry runs included (a preview shows exactly what the filter would have sent).

    Approach: a target that the command does not follow exactly (it jumped, or a limit held the
    command back) is approached so that the command can still stop on it, relative to the target's
    own velocity: no overshoot beyond a target that jumped. This shaping yields to every limit.

    Hold: on any reason in `HOLD_REASONS` the target is ignored and the desired velocity is zero: the
    joints stop where they are, not at an old target. A moving joint cannot stop in one step without
    breaking the acceleration limit, so a hold brakes at `max_acceleration` (|v| falls by at most
    max_acceleration * period per step, travelling about v^2 / (2 * max_acceleration) further, in the
    direction it was already moving); it never reverses.
    """

    def __init__(self, config: SafetyConfig):
        self.config = config
        self._counters = dict.fromkeys(INTERVENTIONS, 0)
        self._command: np.ndarray | None = None
        self._velocity: np.ndarray | None = None
        self._target: np.ndarray | None = None  # last usable target, for the target's own velocity
        self._velocity_step = config.max_acceleration * config.control_period_s  # largest |Δv| per step

    @property
    def counters(self) -> Mapping[str, int]:
        """Live read-only view: how many steps each name in `INTERVENTIONS` applied to."""
        return MappingProxyType(self._counters)

    @property
    def last_command(self) -> np.ndarray | None:
        """Copy of the last command (D,), joint units; None before `reset`."""
        return None if self._command is None else self._command.copy()

    @property
    def last_velocity(self) -> np.ndarray | None:
        """Copy of the last command's velocity (D,), joint units/s; None before `reset`."""
        return None if self._velocity is None else self._velocity.copy()

    def reset(self, measured: np.ndarray) -> None:
        """Start holding at `measured` (D,) with zero velocity.

        A position outside the limits is accepted: from there a joint only ever moves back towards its
        range (a target beyond the limits counts as the nearest limit). Raises `SafetyError` for a wrong
        shape or NaN/inf: the filter cannot start from an unknown position.
        """
        position = self._vector("measured", measured)
        if not np.all(np.isfinite(position)):
            raise SafetyError(f"reset needs a finite measured position, got {position.tolist()}")
        self._command = position
        self._velocity = np.zeros_like(position)
        self._target = None

    def filter(
        self, target: np.ndarray | None, *, measured: np.ndarray, observation_age_s: float
    ) -> tuple[np.ndarray, SafetyReport]:
        """The safe command (D,) for this step towards `target` (D,) or None, and what was done to it.

        `measured` (D,) is the current joint position; `observation_age_s` the age of the observation
        `target` was computed from (ignored when `observation_timeout_s` is None; NaN counts as stale,
        a negative age as fresh). Raises `SafetyError` before `reset` or for arrays of the wrong shape;
        every other problem is handled by holding and counted.
        """
        if self._command is None or self._velocity is None:
            raise SafetyError("SafetyFilter.filter called before reset(measured): the start position is unknown")
        cfg = self.config
        measured = self._vector("measured", measured)
        goal = None if target is None else self._vector("target", target)
        interventions: set[str] = set()
        if not np.isfinite(measured).all():
            interventions.add("bad_measurement")
        if cfg.observation_timeout_s is not None and not observation_age_s <= cfg.observation_timeout_s:
            interventions.add("stale_observation_hold")
        if goal is None:
            interventions.add("no_action_hold")
        elif not np.isfinite(goal).all():
            interventions.add("nan_target")
        held = bool(interventions)

        period = cfg.control_period_s
        command, last_velocity = self._command, self._velocity
        # Braking speeds towards both limits, and towards the target when there is one: one vectorised
        # call, since this runs every control tick on a handful of joints (numpy's per-call cost dominates).
        distances = [cfg.upper - command, command - cfg.lower]
        if held or goal is None:
            desired = np.zeros_like(command)
            target_position = raw = None
            approach_limited = None
            self._target = None
            to_upper, to_lower = braking_speed(np.stack(distances), cfg.max_acceleration, period)
        else:
            if cfg.max_tracking_error is not None:
                reach = cfg.max_tracking_error
                capped = np.minimum(np.maximum(goal, measured - reach), measured + reach)
                if (capped != goal).any():
                    interventions.add("tracking_error_capped")
                goal = capped
            inside = np.minimum(np.maximum(goal, cfg.lower), cfg.upper)
            if (inside != goal).any():
                interventions.add("position_limited")
            raw = (inside - command) / period
            target_position = inside
            # Arriving at a target that jumped at full speed would overshoot it by about v^2 / (2a). So,
            # relative to the target's own velocity (0 after a jump, a reset or a hold), a relative speed
            # that one step cannot cancel is cut to the speed that still stops on the target. A target
            # followed exactly has relative speed 0 and passes unchanged.
            target_velocity = np.zeros_like(raw) if self._target is None else (inside - self._target) / period
            relative = raw - target_velocity
            distances.append(np.abs(relative) * period)
            to_upper, to_lower, brake = braking_speed(np.stack(distances), cfg.max_acceleration, period)
            approach_limited = np.abs(relative) > self._velocity_step
            desired = np.where(approach_limited, target_velocity + np.sign(relative) * brake, raw)
            self._target = inside

        step = self._velocity_step
        # (name, upper bound, lower bound) on this step's velocity; all are per joint.
        bounds = (
            ("velocity_limited", cfg.max_velocity, -cfg.max_velocity),
            ("acceleration_limited", last_velocity + step, last_velocity - step),
            ("position_limited", to_upper, -to_lower),
        )
        high = np.minimum(np.minimum(bounds[0][1], bounds[1][1]), bounds[2][1])
        low = np.maximum(np.maximum(bounds[0][2], bounds[1][2]), bounds[2][2])
        # From a feasible state low <= high always (braking at max_acceleration stays within every bound);
        # only rounding can cross them, and then the position side (high or the final clip) wins.
        velocity = np.minimum(np.maximum(desired, low), high)
        lowered, raised = velocity < desired, velocity > desired
        if lowered.any() or raised.any():
            explained = np.zeros(velocity.shape, dtype=bool)
            for name, upper_bound, lower_bound in bounds:
                hit = (lowered & (upper_bound == velocity)) | (raised & (lower_bound == velocity))
                if hit.any():
                    interventions.add(name)
                    explained |= hit
            if ((lowered | raised) & ~explained).any():
                interventions.add("position_limited")  # crossed bounds: the position side won
        if approach_limited is not None and (approach_limited & ~lowered & ~raised).any():
            interventions.add("approach_limited")  # only where no hard limit overrode the shaping

        position = command + velocity * period
        if target_position is not None:
            # Where the raw velocity went through, land on the target itself: c + v*T can miss it by an ulp.
            position = np.where(velocity == raw, target_position, position)
        # Last resort against rounding; bounds taken with the current command so that an arm reset
        # outside its range is never pulled into it in one jump.
        clipped = np.minimum(np.maximum(position, np.minimum(cfg.lower, command)), np.maximum(cfg.upper, command))
        if (clipped != position).any():
            interventions.add("position_limited")
        self._velocity = (clipped - command) / period
        self._command = clipped

        names = tuple(name for name in INTERVENTIONS if name in interventions)
        for name in names:
            self._counters[name] += 1
        return clipped.copy(), SafetyReport(interventions=names, held=held, dry_run=cfg.dry_run)

    def resume_from(self, command: np.ndarray, velocity: np.ndarray, *, target: np.ndarray | None = None) -> None:
        """Continue from `command` (D,) moving at `velocity` (D,): the state the controller reached by executing
        a lookahead this filter planned (`preview`) while no tick came. `target` (D,) is the target that step
        followed (its own velocity shapes the approach, see the class docstring); None, as after a hold: the
        next target counts as a jump. Raises `SafetyError` before `reset`, for a wrong shape or for NaN/inf."""
        if self._command is None:
            raise SafetyError("SafetyFilter.resume_from called before reset(measured): the start position is unknown")
        position, speed = self._vector("command", command), self._vector("velocity", velocity)
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(speed))):
            raise SafetyError(f"resume_from needs finite values, got {position.tolist()} at {speed.tolist()}")
        self._command, self._velocity = position, speed
        self._target = None if target is None else self._vector("target", target)

    def preview(
        self, targets: np.ndarray, *, measured: np.ndarray, observation_age_s: float, max_steps: int = 10_000
    ) -> np.ndarray:
        """The commands `filter` would give for `targets` (K, D), one per period from the next step on, followed
        by a hold until every joint is at rest: (K + B, D), the last row at rest (its velocity is zero).

        Step k sees the observation `k` periods older than `observation_age_s` (no new observation arrives),
        so a lookahead ends in the hold the filter itself would command. Every row respects the filter's
        position, velocity and acceleration limits, like any sequence of `filter` calls. The filter's state and
        counters are left as they were. Raises `SafetyError` like `filter`, or when the joints are still moving
        after `max_steps` braking steps.
        """
        saved = (self._command, self._velocity, self._target, dict(self._counters))
        period = self.config.control_period_s
        rows = []
        try:
            for k, target in enumerate(np.asarray(targets, dtype=np.float64).reshape(-1, len(self.config.joint_names))):
                rows.append(self.filter(target, measured=measured, observation_age_s=observation_age_s + k * period)[0])
            for _ in range(max_steps):
                if rows and not np.any(self._velocity):
                    break
                rows.append(self.filter(None, measured=measured, observation_age_s=observation_age_s)[0])
            else:
                raise SafetyError(f"preview: joints still moving after {max_steps} braking steps")
        finally:
            self._command, self._velocity, self._target, counters = saved
            self._counters.update(counters)
        return np.array(rows)

    def _vector(self, name: str, value: object) -> np.ndarray:
        try:
            array = np.array(value, dtype=np.float64)  # a copy: inputs are never modified or aliased
        except (TypeError, ValueError) as exc:
            raise SafetyError(f"{name} must be a numeric array, got {value!r}: {exc}") from exc
        expected = (len(self.config.joint_names),)
        if array.shape != expected:
            raise SafetyError(
                f"{name} has shape {array.shape}, expected {expected} for joints {list(self.config.joint_names)}"
            )
        return array
