"""Check that LeRobot loads a checkpoint vla_ros wrote (e.g. `vla-ros finetune` output) and gives vla_ros's actions.

Two steps, one per environment:

    # 1. vla_ros's environment: fixed inputs and noise, and vla_ros's actions with each patch-position behaviour
    python tools/parity/lerobot_loads_vla_ros.py write CHECKPOINT
    # 2. each LeRobot side environment (see smolvla_fixtures.py): LeRobot loads CHECKPOINT and runs the same inputs
    /work/scratch/venvs/lerobot-0.4.4/bin/python tools/parity/lerobot_loads_vla_ros.py check CHECKPOINT
    /work/scratch/venvs/lerobot-0.6.1/bin/python tools/parity/lerobot_loads_vla_ros.py check CHECKPOINT

`write` stores CHECKPOINT/../<name>_parity_io.safetensors. vla_ros's actions are its model's, unnormalized by
the checkpoint's postprocessor, before vla_ros's relative-action transform and per-robot statistics (which
LeRobot does not know). `check` compares them with LeRobot's for the patch positions that LeRobot release runs
(transformers 4.x: "transformers4", 5.x: "transformers5") and exits 1 beyond 1e-4.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TASKS = ["pick up the red cube", "touch the blue cube"]
TOLERANCE = 1e-4


def io_path(checkpoint: Path) -> Path:
    return checkpoint.parent / f"{checkpoint.name}_parity_io.safetensors"


def write(checkpoint: Path) -> None:
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from vla_ros.core.features import STATE, TASK, image_key, image_mask_key
    from vla_ros.policies.smolvla.checkpoint import load_checkpoint

    generator = torch.Generator().manual_seed(0)
    io = {}
    for positions in ("transformers4", "transformers5"):
        loaded = load_checkpoint(checkpoint, patch_positions=positions)
        config = loaded.config
        if not io:
            height, width = config.image_size
            io["state"] = torch.randn(len(TASKS), config.state_dim, generator=generator)
            io["noise"] = torch.randn(len(TASKS), config.chunk_size, config.max_action_dim, generator=generator)
            for camera in config.camera_keys:
                io[f"image_{camera}"] = torch.randint(0, 256, (len(TASKS), height, width, 3), generator=generator,
                                                      dtype=torch.uint8)
        chunks = []
        for i, task in enumerate(TASKS):
            observation = {STATE: io["state"][i].numpy(), TASK: task}
            for camera in config.camera_keys:
                observation[image_key(camera)] = io[f"image_{camera}"][i].numpy()
                observation[image_mask_key(camera)] = True
            with torch.no_grad():
                actions = loaded.model.sample_actions(**loaded.processor.preprocess([observation]),
                                                      noise=io["noise"][i : i + 1])
            chunks.append(loaded.processor.unnormalize_actions(actions)[0])
        io[f"actions_{positions}"] = torch.from_numpy(np.stack(chunks))
    save_file(io, str(io_path(checkpoint)))
    print(f"wrote {io_path(checkpoint)}")


def check(checkpoint: Path) -> int:
    import lerobot
    import torch
    import transformers
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from safetensors.torch import load_file

    io = load_file(str(io_path(checkpoint)))
    positions = "transformers4" if transformers.__version__.startswith("4.") else "transformers5"
    os.chdir(checkpoint)  # vlm_model_name "vlm" resolves against the working directory
    import lerobot.policies.smolvla.smolvlm_with_expert as smolvlm_with_expert
    from transformers import AutoTokenizer

    class TokenizerOnlyProcessor:  # SmolVLA reads only the tokenizer of SmolVLM's processor
        @classmethod
        def from_pretrained(cls, name, *args, **kwargs):
            processor = cls()
            processor.tokenizer = AutoTokenizer.from_pretrained(name)
            return processor

    smolvlm_with_expert.AutoProcessor = TokenizerOnlyProcessor
    policy = SmolVLAPolicy.from_pretrained(".")
    policy.eval()
    preprocessor, postprocessor = make_pre_post_processors(policy.config, pretrained_path=".")
    worst = 0.0
    for i, task in enumerate(TASKS):
        raw = {"observation.state": io["state"][i : i + 1], "task": [task]}
        for key in policy.config.image_features:
            camera = key.removeprefix("observation.images.")
            raw[key] = io[f"image_{camera}"][i : i + 1].permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            actions = postprocessor(policy.predict_action_chunk(preprocessor(raw), noise=io["noise"][i : i + 1]))
        worst = max(worst, (actions[0] - io[f"actions_{positions}"][i]).abs().max().item())
    print(f"LeRobot {lerobot.__version__} (transformers {transformers.__version__}) loaded {checkpoint}; "
          f"max |a_LeRobot - a_vla_ros({positions})| = {worst:.2e}")
    return 0 if worst <= TOLERANCE else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["write", "check"])
    parser.add_argument("checkpoint", type=Path)
    args = parser.parse_args()
    if args.step == "write":
        write(args.checkpoint.resolve())
        return 0
    return check(args.checkpoint.resolve())


if __name__ == "__main__":
    sys.exit(main())
