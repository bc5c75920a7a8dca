"""The built-in VLA: a tiny SmolVLA trained in this repository on the simulator's scripted-expert episodes.

`recipe.py` holds every number that produced the shipped weights, `collect.py` records the episodes, `train.py`
trains and writes `checkpoint/` (a LeRobot-layout SmolVLA checkpoint, loaded by `make_policy("builtin")`).
"""
