"""Language-conditioned tabletop tasks: what an instruction asks for, how cubes are laid out, and when it is done.

`parse_instruction("pick up the red cube")` gives the task; the world calls `Task.sample_layout` on reset and the
evaluation loop calls `Task.is_success(world)` every control tick.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from vla_ros.core.errors import VlaRosError, did_you_mean
from vla_ros.sim.palette import CUBE_COLORS

if TYPE_CHECKING:
    from vla_ros.sim.robots import Workspace


class TaskError(VlaRosError):
    """An instruction the simulator has no task for, or a task the world cannot set up."""


class CubeScene(Protocol):
    """What a task reads from the world to judge success; `SimWorld` is one (the world imports tasks, not the
    other way round)."""

    def gripper_touches(self, color: str) -> bool:
        """Whether any gripper geom is in contact with the `color` cube."""

    def cube_height_above_rest(self, color: str) -> float:
        """Height of the `color` cube above where it rests on the table (m)."""


@dataclass(frozen=True)
class CubePlacement:
    """Where a cube starts: centre on the table plane (m, world frame) and rotation about the vertical (rad)."""

    x: float
    y: float
    yaw: float


@dataclass(frozen=True)
class Task(ABC):
    """Do something with the cube of colour `color`; the other cubes are distractors."""

    color: str
    verb: ClassVar[str]  # the instruction's verb phrase, e.g. "pick up"
    max_duration_s: ClassVar[float]  # episode timeout: a few times what the scripted expert needs

    def __post_init__(self) -> None:
        if self.color not in CUBE_COLORS:
            raise TaskError(f"no cube colour '{self.color}'.{did_you_mean(self.color, CUBE_COLORS)}")

    @property
    def instruction(self) -> str:
        return f"{self.verb} the {self.color} cube"

    @abstractmethod
    def is_success(self, world: CubeScene) -> bool:
        """Whether the world is in a state that completes the task right now."""

    def sample_layout(
        self, colors: tuple[str, ...], workspace: Workspace, rng: np.random.Generator
    ) -> dict[str, CubePlacement]:
        """One placement per colour, uniform over the workspace area, centres at least `min_spacing_m` apart."""
        if self.color not in colors:
            raise TaskError(
                f"'{self.instruction}' needs a {self.color} cube, but the world has only {list(colors)}: "
                f"add {self.color} to the scene's cube colours (vla-ros commands: --colors)"
            )
        # Placing cubes one by one can corner the last ones; starting the whole layout over does not.
        for _ in range(100):
            placements = _place_one_by_one(colors, workspace, rng)
            if placements is not None:
                return placements
        raise TaskError(
            f"cannot place {len(colors)} cubes {workspace.min_spacing_m} m apart in the workspace {workspace}: "
            "use fewer colours"
        )


def place_beside(
    placed: dict[str, CubePlacement], names: tuple[str, ...], workspace: Workspace, rng: np.random.Generator
) -> dict[str, CubePlacement]:
    """A placement per name of `names` (objects other than the task's cubes), spaced out from each other and from
    the `placed` ones, which stay where they are; TaskError where there is no room."""
    for _ in range(100):
        placements = _place_one_by_one(names, workspace, rng, occupied=placed)
        if placements is not None:
            return {name: placements[name] for name in names}
    raise TaskError(f"cannot place {len(names)} more objects beside {len(placed)} in the workspace {workspace}")


def _place_one_by_one(
    colors: tuple[str, ...],
    workspace: Workspace,
    rng: np.random.Generator,
    occupied: dict[str, CubePlacement] | None = None,
) -> dict[str, CubePlacement] | None:
    """A placement per colour uniform over the workspace's area and spaced out (also from `occupied`, which it
    returns along), or None where one found no room."""
    placements: dict[str, CubePlacement] = dict(occupied or {})
    for color in colors:
        for _ in range(100):
            # Uniform in area over the annular sector: the radius goes as the square root.
            radius = math.sqrt(rng.uniform(workspace.min_radius_m**2, workspace.max_radius_m**2))
            azimuth = rng.uniform(-workspace.max_azimuth_rad, workspace.max_azimuth_rad)
            x, y = radius * math.cos(azimuth), radius * math.sin(azimuth)
            if all(math.hypot(x - p.x, y - p.y) >= workspace.min_spacing_m for p in placements.values()):
                # A cube looks the same every quarter turn, so a quarter turn covers every orientation.
                placements[color] = CubePlacement(x, y, rng.uniform(-math.pi / 4, math.pi / 4))
                break
        else:
            return None
    return placements


@dataclass(frozen=True)
class TouchTask(Task):
    """Touch the cube with the gripper (any gripper geom in contact with it)."""

    verb: ClassVar[str] = "touch"
    max_duration_s: ClassVar[float] = 10.0

    def is_success(self, world: CubeScene) -> bool:
        return world.gripper_touches(self.color)


@dataclass(frozen=True)
class PickTask(Task):
    """Lift the cube at least `LIFT_HEIGHT_M` above where it rests on the table, while the gripper touches it."""

    verb: ClassVar[str] = "pick up"
    max_duration_s: ClassVar[float] = 20.0
    LIFT_HEIGHT_M: ClassVar[float] = 0.05

    def is_success(self, world: CubeScene) -> bool:
        return world.cube_height_above_rest(self.color) >= self.LIFT_HEIGHT_M and world.gripper_touches(self.color)


TASK_TYPES: tuple[type[Task], ...] = (TouchTask, PickTask)
# Task family (as the CLIs name it) -> instruction template; parse_instruction reads every one of them back.
TASK_TEMPLATES = {"touch": "touch the {color} cube", "pick": "pick up the {color} cube"}

_INSTRUCTION = re.compile(r"(?P<verb>[a-z ]+?) the (?P<color>[a-z]+) (?:cube|block)")


def parse_instruction(text: str) -> Task:
    """The task an instruction asks for: '<verb> the <colour> cube', case and surrounding punctuation ignored."""
    normalized = " ".join(text.lower().strip().rstrip(".!").split())
    match = _INSTRUCTION.fullmatch(normalized)
    task_type = next((t for t in TASK_TYPES if match and t.verb == match["verb"]), None)
    if task_type is None:
        templates = ", ".join(f"'{t.verb} the <colour> cube'" for t in TASK_TYPES)
        raise TaskError(f"no task for the instruction '{text}': expected one of {templates}")
    return task_type(match["color"])
