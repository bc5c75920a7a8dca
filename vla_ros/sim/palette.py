"""The colours a cube can have. Instructions name them ("pick up the red cube"), the world paints cubes with them.

A new colour needs only an entry here: the world, the instruction parser and the experts pick it up by name.
"""

from __future__ import annotations

# Linear RGB in 0..1, saturated and far apart in hue so that cameras and policies tell them apart under shading.
CUBE_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.08, 0.08),
    "green": (0.10, 0.65, 0.15),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (1.00, 0.45, 0.02),
    "purple": (0.50, 0.15, 0.75),
}
