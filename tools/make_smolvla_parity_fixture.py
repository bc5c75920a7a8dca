"""Write test/fixtures/smolvla_lerobot/: a tiny random SmolVLA saved by LeRobot itself, with LeRobot's outputs.

test/test_policy_smolvla.py loads that checkpoint with vla_ros's own loader and checks that our actions (and
training losses) equal LeRobot's for the same weights, inputs and noise.

This script needs LeRobot, which vla_ros does not depend on. Run it in a separate virtual environment:

    python3.11 -m venv /tmp/lerobot-venv && . /tmp/lerobot-venv/bin/activate
    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    pip install --no-deps lerobot==0.4.4
    pip install "transformers==4.57.*" "draccus==0.10.0" "huggingface-hub<0.36" "diffusers==0.35.2" --no-deps
    pip install numpy safetensors tokenizers einops pyyaml termcolor jsonlines pillow imageio datasets deepdiff \
        av pyserial accelerate num2words packaging regex requests tqdm filelock fsspec
    cd <vla_ros checkout> && python tools/make_smolvla_parity_fixture.py

It runs without torchvision (LeRobot imports it at module level, SmolVLA never calls it) and without network:
the tiny VLM's config and a word-level tokenizer are written next to the checkpoint, in `vlm/`, and LeRobot is
run from the checkpoint directory so that its `vlm_model_name: "vlm"` resolves to them. SmolVLM's processor
wants image and video processor files as well; SmolVLA reads only its tokenizer, so the script hands LeRobot a
tokenizer-only processor.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import os
import shutil
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORDS = ["touch", "pick", "up", "the", "red", "green", "blue", "cube", "and", "place", "it"]
TASKS = ["pick up the red cube", "touch the blue cube and place it"]  # different lengths: padding is exercised
SEED = 0
BATCH = 2
IMAGE = 32
STATE_DIM, ACTION_DIM = 6, 5


def stub_missing_torchvision() -> None:
    """Let `import torchvision...` succeed with placeholder modules (LeRobot imports it at module level)."""
    try:
        import torchvision  # noqa: F401

        return
    except ImportError:
        pass

    class Placeholder:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, *args, **kwargs):
            return Placeholder()

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Placeholder()

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = types.ModuleType(spec.name)
            module.__path__ = []

            def attribute(name):
                if name.startswith("__"):
                    raise AttributeError(name)
                return Placeholder

            module.__getattr__ = attribute
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "test" / "fixtures" / "smolvla_lerobot")
    args = parser.parse_args()
    out = args.out.resolve()
    checkpoint = out / "checkpoint"
    if out.exists():
        shutil.rmtree(out)
    checkpoint.mkdir(parents=True)

    stub_missing_torchvision()
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from vla_ros.policies.smolvla.tiny import build_word_tokenizer, tiny_vlm_config

    tokenizer = build_word_tokenizer(WORDS, checkpoint / "vlm")
    tiny_vlm_config(image_size=IMAGE, patch_size=8, vision_hidden=16, vision_layers=1, vision_heads=2,
                    text_hidden=32, text_layers=4, heads=4, kv_heads=2, vocab_size=len(tokenizer),
                    text_intermediate=64).save_pretrained(checkpoint / "vlm")
    os.chdir(checkpoint)  # LeRobot resolves vlm_model_name "vlm" against the working directory

    import lerobot
    import lerobot.policies.smolvla.smolvlm_with_expert as smolvlm_with_expert
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    class TokenizerOnlyProcessor:
        @classmethod
        def from_pretrained(cls, name):
            processor = cls()
            processor.tokenizer = AutoTokenizer.from_pretrained(name)
            return processor

    smolvlm_with_expert.AutoProcessor = TokenizerOnlyProcessor

    # 4 VLM layers, 2 expert layers beside VLM layers 0 and 2; layer 0 attends jointly, 1-3 cross-attend
    # (LeRobot can run a half-depth expert only when the layers it skips are cross-attention layers).
    config = SmolVLAConfig(
        vlm_model_name="vlm", num_vlm_layers=4, num_expert_layers=2, self_attn_every_n_layers=4,
        chunk_size=6, n_action_steps=6, max_state_dim=8, max_action_dim=8, resize_imgs_with_padding=(IMAGE, IMAGE),
        num_steps=4, tokenizer_max_length=16, empty_cameras=1, device="cpu",
        input_features={
            "observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,)),
            "observation.images.front": PolicyFeature(FeatureType.VISUAL, (3, 48, 64)),
            "observation.images.wrist": PolicyFeature(FeatureType.VISUAL, (3, IMAGE, IMAGE)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
    )
    torch.manual_seed(SEED)
    policy = SmolVLAPolicy(config)
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():  # LeRobot's init leaves norms at 1 and biases at 0: randomize everything
        for name, parameter in policy.named_parameters():
            values = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(1.0 + 0.1 * values if "norm" in name else values * (0.3 if parameter.ndim > 1 else 0.1))
    policy.eval()
    stats = {
        "observation.state": {"mean": torch.randn(STATE_DIM, generator=generator),
                              "std": torch.rand(STATE_DIM, generator=generator) + 0.5},
        "action": {"mean": torch.randn(ACTION_DIM, generator=generator),
                   "std": torch.rand(ACTION_DIM, generator=generator) + 0.5},
    }
    preprocessor, postprocessor = make_smolvla_pre_post_processors(config, stats)
    policy.save_pretrained(".")
    preprocessor.save_pretrained(".")
    postprocessor.save_pretrained(".")

    images = {key: torch.randint(0, 256, (BATCH, IMAGE, IMAGE, 3), generator=generator, dtype=torch.uint8)
              for key in ("front", "wrist")}
    state = torch.randn(BATCH, STATE_DIM, generator=generator) * 2
    noise = torch.randn(BATCH, config.chunk_size, config.max_action_dim, generator=generator)
    raw = {"observation.state": state, "task": list(TASKS)}
    for key, pixels in images.items():
        raw[f"observation.images.{key}"] = pixels.permute(0, 3, 1, 2).float() / 255.0
    batch = preprocessor(raw)
    with torch.no_grad():
        normalized = policy.predict_action_chunk(dict(batch), noise=noise.clone())
        actions = postprocessor(normalized)
        # Training loss for given actions, noise and times, through LeRobot's own preparation of the batch.
        train_actions = torch.randn(BATCH, config.chunk_size, ACTION_DIM, generator=generator)
        train_noise = torch.randn(BATCH, config.chunk_size, config.max_action_dim, generator=generator)
        train_time = torch.tensor([0.25, 0.8])
        train_batch = preprocessor({**raw, "action": train_actions})
        model_images, model_masks = policy.prepare_images(train_batch)
        losses = policy.model.forward(model_images, model_masks, train_batch["observation.language.tokens"],
                                      train_batch["observation.language.attention_mask"],
                                      policy.prepare_state(train_batch), policy.prepare_action(train_batch),
                                      train_noise, train_time)
        # A camera at its recorded size (48x64): LeRobot resizes it with padding inside the policy.
        raw_front = torch.randint(0, 256, (BATCH, 48, 64, 3), generator=generator, dtype=torch.uint8)
        raw_batch = preprocessor({**raw, "observation.images.front": raw_front.permute(0, 3, 1, 2).float() / 255.0})
        raw_size_actions = postprocessor(policy.predict_action_chunk(dict(raw_batch), noise=noise.clone()))
        policy.model.add_image_special_tokens = True  # the same weights with SmolVLM's image delimiter tokens
        special_actions = postprocessor(policy.predict_action_chunk(dict(batch), noise=noise.clone()))

    save_file({"state": state, "noise": noise, "actions": actions.contiguous(),
               "actions_with_image_special_tokens": special_actions.contiguous(),
               "train_actions": train_actions, "train_noise": train_noise, "train_time": train_time,
               "train_losses": losses.contiguous(), "image_front_48x64": raw_front,
               "actions_with_front_48x64": raw_size_actions.contiguous(),
               **{f"image_{key}": pixels.contiguous() for key, pixels in images.items()}},
              str(out / "io.safetensors"))
    import transformers

    (out / "cases.json").write_text(json.dumps({
        "tasks": TASKS, "cameras": list(images),
        "made_with": {"lerobot": lerobot.__version__, "transformers": transformers.__version__,
                      "torch": torch.__version__},
        "script": "tools/make_smolvla_parity_fixture.py",
    }, indent=2) + "\n", encoding="utf-8")
    total = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    print(f"wrote {out} ({total / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
