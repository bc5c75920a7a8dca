"""Policies chosen by one string; each backend is imported only when selected.

A spec is one of:
- `builtin`: the small VLA trained in this repository on the simulator's tasks (ships with the package);
- `builtin-generalist`: the same network trained on five simulated arms, the gen3 held out (ships too);
- a checkpoint directory: its `config.json` says which backend loads it (LeRobot's `type`, transformers'
  `model_type`);
- `ws://host:port` or `wss://host:port`: a remote policy server speaking openpi's websocket protocol;
- `gr00t://host:port`: an Isaac-GR00T policy server (ZMQ); `openvla+http://host:port`: an OpenVLA(-OFT) server;
- `expert`: the simulator's scripted expert (ground truth, simulation only, not a VLA).
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, did_you_mean
from vla_ros.policies.base import Policy
from vla_ros.policies.builtin import SHIPPED_CHECKPOINTS
from vla_ros.policies.device import apply_threads, plan_threads, select_device, weights_bytes

if TYPE_CHECKING:
    from vla_ros.sim.world import SimWorld

logger = logging.getLogger(__name__)

DEFAULT_POLICY = "builtin"
# Policy name -> (its recipe: a key of SHIPPED_CHECKPOINTS and recipe.RECIPES, what to call it in reports).
SHIPPED_POLICIES = {
    "builtin": ("builtin", "built-in VLA (a small SmolVLA trained in this repository on simulator episodes of "
                           "the so101 and the panda"),
    "builtin-generalist": ("generalist", "built-in generalist VLA (the built-in network trained on five "
                                         "simulated arms, the gen3 held out"),
}
NAMED_POLICIES = (*SHIPPED_POLICIES, "expert")

# Checkpoint type (LeRobot's `type` or transformers' `model_type` in config.json) -> "module:function" that loads it.
CHECKPOINT_LOADERS = {
    "smolvla": "vla_ros.policies.smolvla:load_policy",
    "pi0": "vla_ros.policies.pi0:load_policy",
    "pi05": "vla_ros.policies.pi05:load_policy",
}
REMOTE_LOADER = "vla_ros.policies.remote:connect_policy"
# Spec prefix -> loader of other policy-server protocols (vla_ros.policies.remote).
SERVER_LOADERS = {
    "gr00t://": "vla_ros.policies.remote.gr00t_client:connect_gr00t",
    "openvla+http://": "vla_ros.policies.remote.openvla_client:connect_openvla",
}


@dataclass(frozen=True)
class PolicyOptions:
    """How to run a policy, whatever its backend."""

    device: str = "auto"  # see vla_ros.policies.device
    dtype: str = "auto"
    warmup: bool = True  # run one chunk at load so that the first real chunk is not the slow one
    token: str | None = None  # remote servers: the shared secret, if the server asks for one
    threads: int | None = None  # CPU threads of the model's operations; None: chosen (vla_ros.policies.device)
    # SmolVLA: "transformers4" or "transformers5" overrides the vision patch positions the checkpoint's files
    # imply (None: found from them; see vla_ros.policies.smolvla.checkpoint.patch_positions_for).
    patch_positions: str | None = None
    image_resize: str = "exact"  # SmolVLA: "fast" resizes frames with OpenCV in the adapter (moves the actions)


def make_policy(
    spec: str, *, embodiment: EmbodimentConfig, world: SimWorld | None = None, options: PolicyOptions | None = None
) -> Policy:
    """Build the policy named by `spec` for driving `embodiment` (see the module docstring for the forms)."""
    options = options or PolicyOptions()
    spec = spec.strip()
    if spec == "expert":
        if world is None:
            raise ConfigError("policy 'expert' reads the simulator's ground truth and runs only in simulation")
        from vla_ros.policies.expert.policy import ExpertPolicy

        return ExpertPolicy(world, embodiment)
    if spec.startswith(("ws://", "wss://")):
        return _call(REMOTE_LOADER, spec, embodiment=embodiment, options=options)
    for prefix, loader in SERVER_LOADERS.items():
        if spec.startswith(prefix):
            return _call(loader, spec, embodiment=embodiment, options=options)
    if spec in SHIPPED_POLICIES:
        description = SHIPPED_POLICIES[spec][1]
        policy = _load_checkpoint(shipped_checkpoint(spec), embodiment=embodiment, options=options)
        policy.metadata = replace(
            policy.metadata, name=spec,
            description=f"{description}; {policy.metadata.device}, {policy.metadata.features.chunk_size}-step "
                        "chunks)",
        )
        return policy
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_checkpoint(path, embodiment=embodiment, options=options)
    if "/" in spec or spec.startswith("."):
        repo_like = spec.count("/") == 1 and not spec.startswith((".", "/", "~"))
        download = (f"`hf download {spec} --local-dir {spec.split('/')[1]}`, then --policy {spec.split('/')[1]}"
                    if repo_like else "`hf download <repo id> --local-dir <dir>`")
        raise ConfigError(f"policy '{spec}': no such checkpoint directory (weights are never downloaded: give a "
                          f"local directory, or download it beforehand with {download})")
    raise ConfigError(f"unknown policy '{spec}': give builtin, expert, a checkpoint directory, ws://host:port, "
                      "gr00t://host:port or openvla+http://host:port."
                      + did_you_mean(spec, NAMED_POLICIES))


def shipped_checkpoint(name: str) -> Path:
    """The directory of shipped policy `name` (a key of SHIPPED_POLICIES), checked to hold a checkpoint."""
    recipe = SHIPPED_POLICIES[name][0]
    checkpoint = SHIPPED_CHECKPOINTS[recipe]
    if not (checkpoint / "config.json").is_file():
        raise ConfigError(f"the {name} policy's checkpoint is missing from {checkpoint}: reinstall vla_ros, or "
                          f"train it with `python -m vla_ros.policies.builtin.train --recipe {recipe}`")
    return checkpoint


def checkpoint_type(path: Path) -> str:
    """The backend a checkpoint directory needs, from its config.json."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{path} is not a policy checkpoint: it has no config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {config_path}: {exc}") from exc
    kind = config.get("type") or config.get("model_type") if isinstance(config, dict) else None
    if kind not in CHECKPOINT_LOADERS:
        raise ConfigError(f"{config_path}: checkpoint type {kind!r} has no backend in vla_ros."
                          + did_you_mean(str(kind), CHECKPOINT_LOADERS), key="type")
    return kind


def _load_checkpoint(path: Path, *, embodiment: EmbodimentConfig, options: PolicyOptions) -> Policy:
    loader = CHECKPOINT_LOADERS[checkpoint_type(path)]
    # Before loading: the warm-up chunk is the first forward pass, and torch fixes some pools at their first use.
    plan = plan_threads(options.threads, device_type=select_device(options.device).type,
                        weights_bytes=weights_bytes(path))
    apply_threads(plan)
    logger.info("policy %s: %s", path.name, plan.describe())
    policy = _call(loader, path, embodiment=embodiment, options=options)
    policy.metadata = replace(policy.metadata, threads=plan.threads, threads_reason=plan.reason)
    return policy


def _call(target: str, *args, **kwargs) -> Policy:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)(*args, **kwargs)
