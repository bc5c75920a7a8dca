"""What one simulated episode starts from: the scene for a robot, and the task of each episode seed.

The demo, `vla-ros record --sim` and the benchmarks build their episodes here, so that the same seed gives the
same layout and instruction everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vla_ros.sim.tasks import TASK_TEMPLATES, Task, parse_instruction

if TYPE_CHECKING:
    from vla_ros.core.embodiment import EmbodimentConfig
    from vla_ros.sim.variation import SceneVariation
    from vla_ros.sim.world import SimWorld


def parse_colors(text: str) -> tuple[str, ...]:
    """Cube colours from a comma-separated list ("red, green" -> ("red", "green"))."""
    return tuple(c.strip() for c in text.split(",") if c.strip())


def episode_task(task_family: str, colors: tuple[str, ...], seed: int) -> Task:
    """The task of episode `seed`: a `task_family` task on a colour drawn from `colors` by the seed."""
    color = colors[np.random.default_rng(seed).integers(len(colors))]
    return parse_instruction(TASK_TEMPLATES[task_family].format(color=color))


def make_world(
    embodiment: EmbodimentConfig,
    colors: tuple[str, ...],
    camera_size: tuple[int, int] | None = None,
    variation: SceneVariation | None = None,
) -> SimWorld:
    """The simulated scene for `embodiment`, rendering (height, width) or its first camera's resolution, changed
    by `variation` (None: as built)."""
    from vla_ros.sim.world import SimWorld

    camera = embodiment.cameras[0]
    return SimWorld(embodiment.robot, camera_size=camera_size or (camera.height, camera.width), colors=colors,
                    variation=variation)
