"""The built-in VLA: a tiny SmolVLA trained in this repository on the simulator's scripted-expert episodes.

`recipe.py` holds every number that produced the shipped weights, `collect.py` records the episodes, `train.py`
trains and writes `checkpoint/` (a LeRobot-layout SmolVLA checkpoint, loaded by `make_policy("builtin")`) or, with
`--recipe generalist`, `generalist/` (the same network on five arms, `make_policy("builtin-generalist")`).
"""

from pathlib import Path

# Recipe name (recipe.RECIPES) -> where its weights ship in the package.
SHIPPED_CHECKPOINTS = {
    "builtin": Path(__file__).resolve().parent / "checkpoint",
    "generalist": Path(__file__).resolve().parent / "generalist",
}
