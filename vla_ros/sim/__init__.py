"""The MuJoCo world: robot models, JTC-style trajectory execution, language-conditioned tasks, scripted experts."""

import os

# Render headless unless the caller chose a backend (glfw, osmesa): MuJoCo reads this when it is first imported, and
# every module of this package imports mujoco only after the package itself.
os.environ.setdefault("MUJOCO_GL", "egl")
