"""Checks of command-line values shared by the commands, in the user's terms (flags, not code), before any loading."""

from __future__ import annotations

import math

from vla_ros.core.errors import ConfigError, did_you_mean
from vla_ros.sim.episodes import parse_colors
from vla_ros.sim.palette import CUBE_COLORS


def require_count(value: int, flag: str, *, minimum: int = 1) -> int:
    """`value` if it is at least `minimum`, else an error naming `flag`."""
    if value < minimum:
        raise ConfigError(f"{flag} must be {minimum} or more, got {value}")
    return value


def require_milliseconds(value: float, flag: str) -> float:
    """`value` if it is a finite number of milliseconds >= 0, else an error naming `flag`."""
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{flag} must be 0 ms or more, got {value:g}")
    return value


def scene_colors(colors_text: str, targets_text: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(cube colours in the scene, colours the instructions name) from --colors and --targets."""
    colors = parse_colors(colors_text)
    if not colors:
        raise ConfigError(f"--colors names no colour: give one or more of {', '.join(CUBE_COLORS)}, comma-separated")
    for color in colors:
        if color not in CUBE_COLORS:
            raise ConfigError(f"--colors: the simulator has no {color} cube." + did_you_mean(color, CUBE_COLORS))
    if len(set(colors)) != len(colors):
        raise ConfigError(f"--colors names a colour twice ({colors_text}): each colour is one cube")
    if not targets_text:
        return colors, colors
    targets = parse_colors(targets_text)
    missing = [target for target in targets if target not in colors]
    if not targets or missing:
        shown = ", ".join(missing) if missing else "no colour"
        raise ConfigError(
            f"--targets names {shown}, but the scene has only {', '.join(colors)} cubes (--colors): "
            f"add it to --colors, e.g. --colors {','.join(colors + tuple(missing))}"
        )
    return colors, targets
