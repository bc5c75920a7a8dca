"""Write test/fixtures/smolvla_lerobot_<release>/<case>/: tiny random SmolVLA checkpoints saved by LeRobot itself,
fixed inputs and noise, and the actions LeRobot computes from them.

test/test_policy_parity.py loads every case with vla_ros's own loader (LeRobot is not installed there) and checks
that vla_ros's actions equal LeRobot's to 1e-4; `python tools/parity/table.py` prints the parity table.

Each case directory holds `checkpoint/` (written by LeRobot's save_pretrained for the policy and both processor
pipelines, plus the tiny VLM's config and tokenizer in `checkpoint/vlm/`), `io.safetensors` (inputs, noise,
LeRobot's actions), `case.json` (what the case covers and how its inputs are fed) and, for the robot path,
`frame_<camera>.png` (an RGB camera frame, lossless). LeRobot is run from the files it saved, loaded back the
way its robot scripts load a checkpoint (`SmolVLAPolicy.from_pretrained`, `make_pre_post_processors(...,
pretrained_path=...)`).

Cases: one_camera; two_cameras (a camera recorded at 48x64, state 6 and action 5 wide); missing_camera (a camera
absent from the batch); normalization_1..5 (every mode of MEAN_STD, MIN_MAX, QUANTILES, QUANTILE10, IDENTITY
once for STATE, ACTION and VISUAL); postprocessor_stats (the postprocessor unnormalizes with other statistics
than the preprocessor's); tied_embeddings (a VLM whose lm_head shares the embedding matrix); robot_frame (two
640x480 uint8 RGB frames through LeRobot's own robot path: `predict_action` of its record/eval loop, which turns
the frame into a float tensor and lets the policy resize it with padding).

Run it in a side virtual environment per LeRobot release, never in vla_ros's (LeRobot is not a vla_ros
dependency). From the repository root, after building the environments below:

    /work/scratch/venvs/lerobot-0.4.4/bin/python tools/parity/smolvla_fixtures.py
    /work/scratch/venvs/lerobot-0.5.1/bin/python tools/parity/smolvla_fixtures.py
    /work/scratch/venvs/lerobot-0.6.1/bin/python tools/parity/smolvla_fixtures.py

Side environments (only PyPI is needed; about 1 GB for 0.4.4, 5 GB each for 0.5/0.6 because PyPI's cp312
torch 2.13.0 is the CUDA build, which runs on the CPU):

    # LeRobot 0.4.4: CPython 3.11, transformers 4.57
    python3.11 -m venv lerobot-0.4.4 && . lerobot-0.4.4/bin/activate
    printf 'torch==2.13.0\\nhuggingface-hub<0.36\\ntransformers==4.57.6\\n' > constraints.txt
    pip install torch==2.13.0            # the CPU wheel where one is at hand, else PyPI's
    pip install --no-deps lerobot==0.4.4 "torchvision==0.28.*"
    pip install -c constraints.txt transformers==4.57.6 draccus==0.10.0 "huggingface-hub<0.36" \\
        diffusers==0.35.2 datasets av numpy safetensors tokenizers einops pyyaml termcolor jsonlines pillow \\
        imageio deepdiff pyserial accelerate num2words packaging regex requests tqdm filelock fsspec \\
        opencv-python-headless gymnasium
    # PyPI's torchvision 0.28 registers fake kernels for ops its CPU-less build lacks: guard the two decorators
    sed -i 's/^@torch.library.register_fake("torchvision::\\(q\\?nms\\)")$/@(torch.library.register_fake('\\
    '"torchvision::\\1") if torchvision.extension._has_ops() else (lambda f: f))/' \\
        lerobot-0.4.4/lib/python3.11/site-packages/torchvision/_meta_registrations.py

    # LeRobot 0.5.1 and 0.6.1: CPython 3.12, transformers 5.x, each with the versions its own metadata pins
    REL=0.6.1; TF="transformers>=5.4,<5.6"; DR="draccus==0.11.*"; HUB="huggingface-hub>=1.6,<2"
    # REL=0.5.1; TF="transformers==5.3.0"; DR="draccus==0.10.0"; HUB="huggingface-hub>=1.0,<2"
    python3.12 -m venv lerobot-$REL && . lerobot-$REL/bin/activate
    echo torch==2.13.0 > constraints.txt
    pip install -c constraints.txt torch==2.13.0
    pip install --no-deps lerobot==$REL "torchvision==0.28.*"
    pip install -c constraints.txt "$TF" "$DR" "$HUB" "numpy<2.3" einops safetensors num2words accelerate \\
        opencv-python-headless pillow gymnasium deepdiff termcolor jsonlines imageio pyyaml packaging regex \\
        requests tqdm filelock fsspec pyserial pandas pyarrow datasets av diffusers

pip warns that LeRobot pins older torch/torchvision; SmolVLA runs. No network is needed at run time: LeRobot
names the VLM `vlm`, which resolves against the checkpoint directory the script runs LeRobot from, and SmolVLM's
processor is replaced by a tokenizer-only one (SmolVLA reads only its tokenizer).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # vla_ros.policies.smolvla.tiny: imports only transformers and tokenizers

WORDS = ["touch", "pick", "up", "the", "red", "green", "blue", "cube", "and", "place", "it"]
TASKS = ["pick up the red cube", "touch the blue cube and place it"]  # different lengths: padding is exercised
SEED = 0
BATCH = 2
IMAGE = 32
CHUNK = 6
MAX_DIM = 8
FRAME = (480, 640)  # (H, W) of the robot path's camera frames
ROBOT_OBSERVATIONS = 1  # the robot path runs one observation (frames are the bulk of a fixture)
MODES = ("MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10", "IDENTITY")
DEFAULT_NORMALIZATION = {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}


@dataclass
class Case:
    name: str
    covers: str  # one line for the parity table
    cameras: dict[str, tuple[int, int]] = field(default_factory=lambda: {"front": (IMAGE, IMAGE)})  # (H, W) in config
    fed: tuple[str, ...] | None = None  # cameras in the input batch (None: all)
    input_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> (H, W) fed, if not its config
    state_dim: int = 6
    action_dim: int = 6
    normalization: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    empty_cameras: int = 0
    postprocessor_stats_differ: bool = False
    tie_word_embeddings: bool = False
    robot_path: bool = False
    extras: bool = False  # also LeRobot's training losses and actions with SmolVLM's image special tokens


def latin_square_normalization(index: int) -> dict[str, str]:
    """Case `index` (0-4) of five that give each mode once to each of STATE, ACTION and VISUAL."""
    return {"STATE": MODES[index], "ACTION": MODES[(index + 1) % 5], "VISUAL": MODES[(index + 3) % 5]}


CASES = [
    Case("one_camera", "1 camera, state 6 / action 6"),
    Case("two_cameras", "2 cameras (one recorded at 48x64, resized inside), state 6 / action 5",
         cameras={"front": (48, 64), "wrist": (IMAGE, IMAGE)}, input_sizes={"front": (48, 64)}, action_dim=5,
         extras=True),
    Case("missing_camera", "2 cameras + 1 empty camera slot, wrist absent from the batch",
         cameras={"front": (IMAGE, IMAGE), "wrist": (IMAGE, IMAGE)}, fed=("front",), empty_cameras=1),
    *[Case(f"normalization_{i + 1}", "normalization " + ", ".join(f"{k} {v}" for k, v in
                                                                  latin_square_normalization(i).items()),
           cameras={"front": (IMAGE, IMAGE), "wrist": (IMAGE, IMAGE)}, state_dim=5, action_dim=4,
           normalization=latin_square_normalization(i)) for i in range(5)],
    Case("postprocessor_stats", "postprocessor's action stats differ from the preprocessor's",
         postprocessor_stats_differ=True),
    Case("tied_embeddings", "VLM with tied word embeddings (one tensor saved)", tie_word_embeddings=True),
    Case("robot_frame", "2 raw 640x480 RGB frames through LeRobot's predict_action (robot path)",
         cameras={"front": (IMAGE, IMAGE), "wrist": (IMAGE, IMAGE)}, robot_path=True),
]


# -- helpers any policy's fixtures can use --------------------------------------------------------------------------


def lerobot_release() -> str:
    import lerobot

    return lerobot.__version__


def made_with() -> dict[str, str]:
    import torch
    import transformers

    return {"lerobot": lerobot_release(), "transformers": transformers.__version__, "torch": torch.__version__,
            "python": sys.version.split()[0]}


def randomize_parameters(module, generator) -> None:
    """Every parameter random (LeRobot's init leaves norms at 1 and biases at 0, which hides mistakes)."""
    import torch

    with torch.no_grad():
        for name, parameter in module.named_parameters():
            values = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(1.0 + 0.1 * values if "norm" in name else values * (0.3 if parameter.ndim > 1 else 0.1))


def feature_stats(generator, shape: tuple[int, ...], shift: float = 0.0) -> dict:
    """Every statistic LeRobot's normalizer reads, consistent (min < q01 < q10 < q90 < q99 < max)."""
    import torch

    low = torch.randn(shape, generator=generator) * 0.2 - 0.5 + shift
    high = low + torch.rand(shape, generator=generator) + 0.5
    return {"mean": (low + high) / 2, "std": torch.rand(shape, generator=generator) * 0.5 + 0.2,
            "min": low - 0.2, "max": high + 0.2, "q01": low - 0.1, "q99": high + 0.1, "q10": low, "q90": high}


def robot_frame(height: int, width: int, seed: int):
    """(H, W, 3) uint8: gradients, stripes and edges, which resize methods treat differently, and PNG keeps small."""
    import numpy as np

    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin(cols / (7.0 + seed)) * np.cos(rows / 11.0)
    green = (rows * 255.0 / height + 60 * ((cols // (9 + seed)) % 2)) % 256
    blue = np.where((rows // (40 + seed) + cols // 40) % 2 == 0, 200.0, 30.0)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


def write_png(path: Path, rgb) -> None:
    from PIL import Image

    Image.fromarray(rgb, mode="RGB").save(path, optimize=True)


def tokenizer_only_processor():
    """SmolVLM's AutoProcessor wants image/video processor files; SmolVLA only reads its tokenizer."""
    from transformers import AutoTokenizer

    class TokenizerOnlyProcessor:
        @classmethod
        def from_pretrained(cls, name, *args, **kwargs):
            processor = cls()
            processor.tokenizer = AutoTokenizer.from_pretrained(name)
            return processor

    return TokenizerOnlyProcessor


# -- SmolVLA -----------------------------------------------------------------------------------------------------------


def write_smolvla_case(case: Case, out: Path) -> dict:
    import lerobot.policies.smolvla.smolvlm_with_expert as smolvlm_with_expert
    import torch
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors
    from safetensors.torch import save_file

    from vla_ros.policies.smolvla.tiny import build_word_tokenizer, tiny_vlm_config

    if out.exists():
        shutil.rmtree(out)
    checkpoint = out / "checkpoint"
    checkpoint.mkdir(parents=True)
    tokenizer = build_word_tokenizer(WORDS, checkpoint / "vlm")
    tiny_vlm_config(image_size=IMAGE, patch_size=8, vision_hidden=16, vision_layers=1, vision_heads=2, text_hidden=16,
                    text_layers=2, heads=4, kv_heads=2, vocab_size=len(tokenizer), text_intermediate=32,
                    tie_word_embeddings=case.tie_word_embeddings).save_pretrained(checkpoint / "vlm")
    smolvlm_with_expert.AutoProcessor = tokenizer_only_processor()
    cwd = os.getcwd()
    os.chdir(checkpoint)  # LeRobot resolves vlm_model_name "vlm" against the working directory
    try:
        generator = torch.Generator().manual_seed(SEED)
        input_features = {"observation.state": PolicyFeature(FeatureType.STATE, (case.state_dim,))}
        for camera, (height, width) in case.cameras.items():
            input_features[f"observation.images.{camera}"] = PolicyFeature(FeatureType.VISUAL, (3, height, width))
        # 2 VLM layers, each with an expert layer: layer 0 attends jointly, layer 1 cross-attends.
        config = SmolVLAConfig(
            vlm_model_name="vlm", num_vlm_layers=2, num_expert_layers=2, self_attn_every_n_layers=2,
            chunk_size=CHUNK, n_action_steps=CHUNK, max_state_dim=MAX_DIM, max_action_dim=MAX_DIM,
            resize_imgs_with_padding=(IMAGE, IMAGE), num_steps=4, tokenizer_max_length=16,
            empty_cameras=case.empty_cameras, device="cpu", input_features=input_features,
            output_features={"action": PolicyFeature(FeatureType.ACTION, (case.action_dim,))},
            normalization_mapping={key: NormalizationMode(mode) for key, mode in case.normalization.items()},
        )
        torch.manual_seed(SEED)
        policy = SmolVLAPolicy(config)
        randomize_parameters(policy, generator)
        stats = {"observation.state": feature_stats(generator, (case.state_dim,)),
                 "action": feature_stats(generator, (case.action_dim,))}
        for camera in case.cameras:
            stats[f"observation.images.{camera}"] = feature_stats(generator, (3, 1, 1), shift=0.5)
        preprocessor, postprocessor = make_smolvla_pre_post_processors(config, stats)
        if case.postprocessor_stats_differ:
            other = dict(stats, action=feature_stats(generator, (case.action_dim,), shift=2.0))
            postprocessor = make_smolvla_pre_post_processors(config, other)[1]
        policy.save_pretrained(".")
        preprocessor.save_pretrained(".")
        postprocessor.save_pretrained(".")

        # Run LeRobot from the files it wrote, as its record/eval scripts load a checkpoint.
        policy = SmolVLAPolicy.from_pretrained(".")
        policy.eval()
        preprocessor, postprocessor = make_pre_post_processors(policy.config, pretrained_path=".")
        state = torch.randn(BATCH, case.state_dim, generator=generator) * 0.5
        noise = torch.randn(BATCH, CHUNK, MAX_DIM, generator=generator)
        io = {"state": state, "noise": noise}
        fed = case.fed if case.fed is not None else tuple(case.cameras)
        if case.robot_path:
            io = {"state": state[:ROBOT_OBSERVATIONS], "noise": noise[:ROBOT_OBSERVATIONS]}
            actions = _robot_path_actions(case, policy, preprocessor, postprocessor, state, noise, out)
        else:
            raw = {"observation.state": state, "task": list(TASKS)}
            for camera in fed:
                height, width = case.input_sizes.get(camera, case.cameras[camera])
                pixels = torch.randint(0, 256, (BATCH, height, width, 3), generator=generator, dtype=torch.uint8)
                io[f"image_{camera}"] = pixels
                raw[f"observation.images.{camera}"] = pixels.permute(0, 3, 1, 2).float() / 255.0
            with torch.no_grad():
                actions = postprocessor(policy.predict_action_chunk(dict(preprocessor(raw)), noise=noise.clone()))
                if case.extras:
                    io.update(_extras(case, policy, preprocessor, postprocessor, raw, noise, generator))
        io["actions"] = actions.contiguous()
        save_file({key: value.contiguous() for key, value in io.items()}, str(out / "io.safetensors"))
    finally:
        os.chdir(cwd)
    meta = {"policy": "smolvla", "case": case.name, "covers": case.covers, "tasks": TASKS,
            "cameras": list(case.cameras), "fed": list(fed), "robot_path": case.robot_path,
            "frame_size": list(FRAME) if case.robot_path else None, "made_with": made_with(),
            "script": "tools/parity/smolvla_fixtures.py"}
    (out / "case.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def _extras(case, policy, preprocessor, postprocessor, raw: dict, noise, generator) -> dict:
    """Training losses for given actions, noise and times, and actions with image special tokens on."""
    import torch

    train_actions = torch.randn(BATCH, CHUNK, case.action_dim, generator=generator)
    train_noise = torch.randn(BATCH, CHUNK, MAX_DIM, generator=generator)
    train_time = torch.tensor([0.25, 0.8])
    batch = preprocessor({**raw, "action": train_actions})
    images, masks = policy.prepare_images(batch)
    losses = policy.model.forward(images, masks, batch["observation.language.tokens"],
                                  batch["observation.language.attention_mask"], policy.prepare_state(batch),
                                  policy.prepare_action(batch), train_noise, train_time)
    policy.model.add_image_special_tokens = True  # the same weights with SmolVLM's image delimiter tokens
    special = postprocessor(policy.predict_action_chunk(dict(preprocessor(raw)), noise=noise.clone()))
    policy.model.add_image_special_tokens = False
    return {"train_actions": train_actions, "train_noise": train_noise, "train_time": train_time,
            "train_losses": losses, "actions_with_image_special_tokens": special}


def _robot_path_actions(case, policy, preprocessor, postprocessor, state, noise, out: Path):
    """LeRobot's own robot loop: predict_action on numpy frames, one action per call, noise fixed per chunk."""
    import torch

    try:
        from lerobot.common.control_utils import predict_action  # 0.5+
    except ImportError:
        from lerobot.utils.control_utils import predict_action  # 0.4

    chunks = []
    for i in range(ROBOT_OBSERVATIONS):
        policy.reset()
        policy.model.sample_noise = lambda shape, device, i=i: noise[i : i + 1].clone().to(device)
        observation = {"observation.state": state[i].numpy()}
        for camera_index, camera in enumerate(case.cameras):
            frame = robot_frame(*FRAME, seed=i * len(case.cameras) + camera_index)
            write_png(out / f"frame_{camera}_{i}.png", frame)
            observation[f"observation.images.{camera}"] = frame
        steps = [predict_action(observation, policy, torch.device("cpu"), preprocessor, postprocessor, False,
                                task=TASKS[i], robot_type="so101") for _ in range(CHUNK)]
        chunks.append(torch.stack([step.reshape(-1) for step in steps]))
    return torch.stack(chunks)


POLICIES = {"smolvla": (CASES, write_smolvla_case)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", choices=sorted(POLICIES), default="smolvla")
    parser.add_argument("--out", type=Path, default=REPO / "test" / "fixtures",
                        help="fixtures root; cases go to <out>/<policy>_lerobot_<release>/<case>/")
    parser.add_argument("--case", action="append", help="only these cases (default: all)")
    args = parser.parse_args()
    cases, write = POLICIES[args.policy]
    root = args.out.resolve() / f"{args.policy}_lerobot_{lerobot_release()}"
    unknown = set(args.case or ()) - {case.name for case in cases}
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; known: {[case.name for case in cases]}")
    for case in cases:
        if args.case and case.name not in args.case:
            continue
        write(case, root / case.name)
        size = sum(path.stat().st_size for path in (root / case.name).rglob("*") if path.is_file())
        print(f"{root.name}/{case.name}: {size / 1e3:.0f} kB", flush=True)


if __name__ == "__main__":
    main()
