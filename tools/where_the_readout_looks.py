"""Where a built-in VLA checkpoint thinks the named cube is, at the first sample of recorded episodes.

The grounding readout (vla_ros.policies.builtin.train.GroundingReadout) regresses the instructed cube's table
position from the images and the words. At an episode's first sample nothing else gives the target away, so its
error there says whether the model finds the cube on a robot's view of the table. Run it on the layouts a model
was trained on and on new ones (training shards of other episode indices) to tell learning the view from learning
the layouts. Per robot of each shard folder, one line: median error, share within 3 cm, and how often the cube
nearest the read-out position is the named one.

    python -m vla_ros.policies.builtin.collect --recipe generalist --robots gen3 --seed 900000 --out new_layouts
    python tools/where_the_readout_looks.py --policy gen3_grounded --shards gen3_shards new_layouts \
        --stats-from gen3_shards generalist_data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def readout_positions(checkpoint, robot: str, samples: dict[str, np.ndarray], rows: np.ndarray,
                      scale: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(len(rows), 2) table positions (m) the checkpoint's grounding readout gives for the named cube; `scale`:
    (mean, std) of the robot's grounding targets in the data it was trained on (the readout's units)."""
    import torch

    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.builtin.train import GroundingReadout, sample_observation
    from vla_ros.policies.smolvla.policy import SmolVLAPolicy

    readout = GroundingReadout(checkpoint.model, checkpoint.config.action_dim, {robot: scale})
    embodiment = load_embodiment(robot)
    processor = SmolVLAPolicy(checkpoint, action_dt_s=embodiment.control_period_s, embodiment=embodiment,
                              warmup=False).processor
    observations = [sample_observation(samples, i) for i in rows]
    with torch.no_grad():
        cache = checkpoint.model.encode_prefix(**processor.preprocess(observations))
    return readout.positions(cache, robot)[:, :2]


def main() -> None:
    from vla_ros.policies.builtin.train import position_in_episode
    from vla_ros.policies.finetune import grounding_scales, shard_samples
    from vla_ros.policies.smolvla.checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, required=True, help="built-in VLA checkpoint directory")
    parser.add_argument("--shards", type=Path, nargs="+", required=True, help="folders of training shards (*.npz)")
    parser.add_argument("--stats-from", type=Path, nargs="+",
                        help="the shards the checkpoint was trained on: they set the readout's units (default: each "
                             "--shards folder's own)")
    parser.add_argument("--task", default="touch", help="episodes of this task family only")
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.policy)
    trained_scales = grounding_scales(
        (robot, samples) for folder in args.stats_from or [] for robot, samples in shard_samples(folder).items())
    for folder in args.shards:
        per_robot = shard_samples(folder)
        scales = {**grounding_scales(per_robot.items()), **trained_scales}
        for robot, samples in per_robot.items():
            task = np.array([str(text).split(" ")[0] == args.task for text in samples["instruction"]])
            rows = np.flatnonzero((position_in_episode(samples) == 0) & task)
            read = readout_positions(checkpoint, robot, samples, rows, scales[robot])
            error_cm = np.linalg.norm(read - samples["goal"][rows], axis=1) * 100
            cubes = samples["cubes"][rows]  # (n, colours, 2)
            nearest = np.argmin(np.linalg.norm(cubes - read[:, None], axis=2), axis=1)
            named = np.argmin(np.linalg.norm(cubes - samples["goal"][rows][:, None], axis=2), axis=1)
            print(f"{folder} {robot}: {len(rows)} episodes, median error {np.median(error_cm):.1f} cm, within 3 cm "
                  f"{np.mean(error_cm < 3):.2f}, nearest cube is the named one {np.mean(nearest == named):.2f}")


if __name__ == "__main__":
    main()
