"""Inverse kinematics of the tool centre point: damped least squares on MuJoCo Jacobians, on a private MjData."""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

# Rotation errors are scaled by this length (m/rad) before they join position errors, so that a least-squares
# compromise (an unreachable pose) gives up orientation before position.
_ROTATION_WEIGHT_M = 0.1
_DAMPING = 1e-2  # keeps steps bounded near singularities; small enough not to slow convergence elsewhere
_MAX_STEP_RAD = 0.2
_LIMIT_MARGIN = 1e-3  # stay strictly inside the joint range: MuJoCo's limit constraints engage at the boundary
_POSTURE_GAIN = 0.1  # per iteration, in the null space of the TCP task (arms with more than 6 joints)


@dataclass(frozen=True)
class IkSolution:
    """The joints found for a TCP pose and how far from that pose they leave the TCP."""

    positions: np.ndarray  # (J,) arm joint positions, rad
    position_error_m: float
    rotation_error_rad: float

    def converged(self, *, position_tolerance_m: float = 1e-3, rotation_tolerance_rad: float = 1e-2) -> bool:
        return self.position_error_m <= position_tolerance_m and self.rotation_error_rad <= rotation_tolerance_rad


class TcpIk:
    """Joint positions that put `site` at a pose, for the hinge joints `joint_names` (the arm, not the gripper).

    `posture` (J,) is the configuration that redundant arms lean towards, so that solutions stay near it.
    """

    def __init__(self, model: mujoco.MjModel, joint_names: tuple[str, ...], *, site: str, posture: np.ndarray):
        self._model = model
        self._data = mujoco.MjData(model)
        joint_ids = [model.joint(name).id for name in joint_names]
        self._qpos_addresses = model.jnt_qposadr[joint_ids]
        self._dof_addresses = model.jnt_dofadr[joint_ids]
        self._lower = model.jnt_range[joint_ids, 0] + _LIMIT_MARGIN
        self._upper = model.jnt_range[joint_ids, 1] - _LIMIT_MARGIN
        self._site = model.site(site).id
        self._posture = np.asarray(posture, dtype=np.float64)
        self._jacobian_position = np.zeros((3, model.nv))
        self._jacobian_rotation = np.zeros((3, model.nv))

    def forward(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,) m, rotation matrix (3, 3)) of the site at arm joint `positions` (J,)."""
        self._set(positions)
        return self._data.site_xpos[self._site].copy(), self._data.site_xmat[self._site].reshape(3, 3).copy()

    def solve(
        self,
        position: np.ndarray,
        rotation: np.ndarray,
        seed: np.ndarray,
        *,
        lean_to_posture: bool = True,
        max_iterations: int = 200,
    ) -> IkSolution:
        """Arm joints that put the site at `position` (3,) m with `rotation` (3, 3), starting the search at `seed` (J,).

        Without `lean_to_posture` the solution is the smallest joint motion from `seed`, which keeps a chain of
        solves along a path smooth. Returns the best effort when the pose is out of reach; check `converged()`.
        """
        target_quat = np.zeros(4)
        mujoco.mju_mat2Quat(target_quat, np.asarray(rotation, dtype=np.float64).reshape(9))
        q = np.clip(np.asarray(seed, dtype=np.float64), self._lower, self._upper)
        for _ in range(max_iterations):
            position_error, rotation_error = self._errors(q, position, target_quat)
            if np.linalg.norm(position_error) < 1e-5 and np.linalg.norm(rotation_error) < 1e-4:
                break
            mujoco.mj_jacSite(self._model, self._data, self._jacobian_position, self._jacobian_rotation, self._site)
            jacobian = np.vstack(
                [
                    self._jacobian_position[:, self._dof_addresses],
                    _ROTATION_WEIGHT_M * self._jacobian_rotation[:, self._dof_addresses],
                ]
            )
            error = np.concatenate([position_error, _ROTATION_WEIGHT_M * rotation_error])
            # Damped pseudo-inverse in the joint-space form, which stays well-posed for 5 joints and 6 constraints.
            pseudo_inverse = np.linalg.solve(jacobian.T @ jacobian + _DAMPING**2 * np.eye(len(q)), jacobian.T)
            step = pseudo_inverse @ error
            if lean_to_posture:
                # The exact null-space projector: built from the damped inverse it would leak into the TCP task.
                null_space = np.eye(len(q)) - np.linalg.pinv(jacobian, rcond=1e-6) @ jacobian
                step += null_space @ (_POSTURE_GAIN * (self._posture - q))
            largest = np.abs(step).max()
            if largest > _MAX_STEP_RAD:
                step *= _MAX_STEP_RAD / largest
            q = np.clip(q + step, self._lower, self._upper)
        position_error, rotation_error = self._errors(q, position, target_quat)
        return IkSolution(q, float(np.linalg.norm(position_error)), float(np.linalg.norm(rotation_error)))

    def _set(self, positions: np.ndarray) -> None:
        self._data.qpos[self._qpos_addresses] = positions
        # Kinematics and the com-based frames that mj_jacSite reads; no collision or dynamics work.
        mujoco.mj_kinematics(self._model, self._data)
        mujoco.mj_comPos(self._model, self._data)

    def _errors(self, q: np.ndarray, position: np.ndarray, target_quat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position error (3,) m, rotation error vector (3,) rad), both world frame, target minus current."""
        self._set(q)
        current_quat = np.zeros(4)
        mujoco.mju_mat2Quat(current_quat, self._data.site_xmat[self._site])
        conjugate = np.zeros(4)
        mujoco.mju_negQuat(conjugate, current_quat)
        difference = np.zeros(4)
        mujoco.mju_mulQuat(difference, target_quat, conjugate)
        if difference[0] < 0:  # q and -q are the same rotation: take the short way round
            difference = -difference
        rotation_error = np.zeros(3)
        mujoco.mju_quat2Vel(rotation_error, difference, 1.0)
        return np.asarray(position) - self._data.site_xpos[self._site], rotation_error
