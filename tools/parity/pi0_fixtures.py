"""Write test/fixtures/pi0_lerobot_<release>/ and pi05_lerobot_<release>/: tiny random pi0 / pi0.5 policies saved
by LeRobot itself, with LeRobot's actions for fixed inputs and noise.

test/test_policy_pi0.py and test/test_policy_pi05.py load these checkpoints with vla_ros's own loader (no LeRobot
installed) and check that vla_ros's actions equal LeRobot's to 1e-4.

Run it in a LeRobot side venv (LeRobot is never a vla_ros dependency), from the repository root:

    /work/scratch/venvs/lerobot-0.6.1/bin/python tools/parity/pi0_fixtures.py

LeRobot's pi0 sizes are fixed by two variant names (gemma_2b, gemma_300m), PaliGemma's SigLIP and a 257,152-token
vocabulary: the script shrinks them (and only them) by wrapping LeRobot's `get_gemma_config` and the two model
constructors it calls, so every forward pass is LeRobot's own code. The sizes are stored in cases.json; the tests
give vla_ros the same sizes. The tokenizer is a word-level one written into the checkpoint (`tokenizer/`), named
in the pipeline's tokenizer step instead of google/paligemma-3b-pt-224, which cannot be downloaded here.

Cases (batch of 2 observations, different instruction lengths): two cameras at the model's resolution, one camera
(the same weights under a one-camera config.json), a missing camera, a camera at another size (resized with
padding inside LeRobot's policy), and each normalization mode for state and action. The postprocessor is built
from other action statistics than the preprocessor, so the tests see which file unnormalizes the actions.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEED = 0
BATCH = 2
IMAGE = 32
STATE_DIM, ACTION_DIM = 7, 6  # both narrower than the padded 8, and different
MAX_DIM = 8
CHUNK = 5
TASKS = ["pick up the red cube", "touch_the blue cube and place it\n"]  # pi0.5 cleans "_" and "\n"
WORDS = [
    "touch",
    "pick",
    "up",
    "the",
    "red",
    "green",
    "blue",
    "cube",
    "and",
    "place",
    "it",
    "Task",
    "State",
    "Action",
    ":",
    ",",
    ";",
]
SPECIAL = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
# Tiny sizes (LeRobot reshapes attention to 8 heads whatever the variant, so both have 8).
VARIANTS = {
    "gemma_2b": dict(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=4),
    "gemma_300m": dict(width=16, depth=2, mlp_dim=32, num_heads=8, num_kv_heads=1, head_dim=4),
}
VISION = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "patch_size": 8, "intermediate_size": 32}
MODES = ("MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10", "IDENTITY")
DEFAULT_MODE = {"pi0": "MEAN_STD", "pi05": "QUANTILES"}


def word_tokenizer(directory: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocabulary = [*SPECIAL.values(), *WORDS, *map(str, range(256))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocabulary)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL)
    fast.save_pretrained(str(directory))
    return fast


def shrink_lerobot(modeling, vocab_size: int):
    """Make LeRobot build tiny models: variant sizes, SigLIP and vocabulary; its forward code is untouched."""
    real_variant = modeling.get_gemma_config
    real_vlm, real_expert = modeling.PaliGemmaForConditionalGenerationWithPiGemma, modeling.PiGemmaForCausalLM

    def get_gemma_config(variant):
        real_variant(variant)  # the same names LeRobot accepts
        return modeling.GemmaConfig(**VARIANTS[variant])

    def vlm(config):
        for key, value in VISION.items():
            setattr(config.vision_config, key, value)
        config.vision_config.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = vocab_size
        return real_vlm(config=config)

    def expert(config):
        config.vocab_size = vocab_size
        return real_expert(config=config)

    modeling.get_gemma_config = get_gemma_config
    modeling.PaliGemmaForConditionalGenerationWithPiGemma = vlm
    modeling.PiGemmaForCausalLM = expert

    def restore() -> None:
        modeling.get_gemma_config = real_variant
        modeling.PaliGemmaForConditionalGenerationWithPiGemma = real_vlm
        modeling.PiGemmaForCausalLM = real_expert

    return restore


def stats(generator, width: int, shift: float = 0.0) -> dict:
    import torch

    low = torch.randn(width, generator=generator) - 1.0 + shift
    high = low + torch.rand(width, generator=generator) * 2 + 0.5
    return {
        "mean": (low + high) / 2,
        "std": torch.rand(width, generator=generator) + 0.5,
        "min": low - 0.3,
        "max": high + 0.3,
        "q01": low - 0.1,
        "q99": high + 0.1,
        "q10": low,
        "q90": high,
    }


def make(kind: str, out: Path) -> None:
    import importlib

    import lerobot
    import torch
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from safetensors.torch import save_file

    modeling = importlib.import_module(f"lerobot.policies.{kind}.modeling_{kind}")
    processing = importlib.import_module(f"lerobot.policies.{kind}.processor_{kind}")
    configuration = importlib.import_module(f"lerobot.policies.{kind}.configuration_{kind}")
    config_class = configuration.PI0Config if kind == "pi0" else configuration.PI05Config
    policy_class = modeling.PI0Policy if kind == "pi0" else modeling.PI05Policy
    make_processors = getattr(processing, f"make_{kind}_pre_post_processors")

    if out.exists():
        shutil.rmtree(out)
    checkpoint = out / "checkpoint"
    checkpoint.mkdir(parents=True)
    tokenizer = word_tokenizer(checkpoint / "tokenizer")
    restore_sizes = shrink_lerobot(modeling, len(tokenizer))
    real_step = processing.TokenizerProcessorStep
    processing.TokenizerProcessorStep = lambda **kw: real_step(**{**kw, "tokenizer_name": "tokenizer"})
    os.chdir(checkpoint)  # the tokenizer step resolves "tokenizer" against the working directory

    def features(cameras):
        inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,))}
        for camera in cameras:
            inputs[f"observation.images.{camera}"] = PolicyFeature(FeatureType.VISUAL, (3, IMAGE, IMAGE))
        return inputs

    def policy_config(cameras, mode):
        return config_class(
            chunk_size=CHUNK,
            n_action_steps=CHUNK,
            max_state_dim=MAX_DIM,
            max_action_dim=MAX_DIM,
            num_inference_steps=3,
            image_resolution=(IMAGE, IMAGE),
            tokenizer_max_length=40,
            device="cpu",
            input_features=features(cameras),
            output_features={"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
            normalization_mapping={
                "VISUAL": NormalizationMode.IDENTITY,
                "STATE": NormalizationMode(mode),
                "ACTION": NormalizationMode(mode),
            },
        )

    config = policy_config(("front", "wrist"), DEFAULT_MODE[kind])
    torch.manual_seed(SEED)
    policy = policy_class(config)
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():  # LeRobot's init leaves norms at 0 (Gemma's 1 + w) and adaRMS at 0: randomize everything
        for name, parameter in policy.named_parameters():
            values = torch.randn(parameter.shape, generator=generator)
            scale = 0.3 if parameter.ndim > 1 else 0.1
            siglip_norm = ("layer_norm" in name or "post_layernorm" in name) and name.endswith("weight")
            parameter.copy_(1.0 + 0.1 * values if siglip_norm else values * scale)
    policy.eval()
    dataset_stats = {"observation.state": stats(generator, STATE_DIM), "action": stats(generator, ACTION_DIM)}
    # The postprocessor unnormalizes with other action statistics: vla_ros must read the postprocessor's own file.
    post_stats = {
        "observation.state": dataset_stats["observation.state"],
        "action": stats(generator, ACTION_DIM, shift=0.5),
    }
    policy.save_pretrained(".")

    def processors(mode, directory: Path):
        mode_config = policy_config(("front", "wrist"), mode)
        preprocessor, _ = make_processors(mode_config, dataset_stats)
        _, postprocessor = make_processors(mode_config, post_stats)
        directory.mkdir(parents=True, exist_ok=True)
        preprocessor.save_pretrained(str(directory))
        postprocessor.save_pretrained(str(directory))
        return preprocessor, postprocessor

    default_pre, default_post = processors(DEFAULT_MODE[kind], checkpoint)
    one_camera_dir = out / "one_camera"
    one_camera_dir.mkdir()
    policy_config(("front",), DEFAULT_MODE[kind])._save_pretrained(one_camera_dir)

    images = {
        camera: torch.randint(0, 256, (BATCH, IMAGE, IMAGE, 3), generator=generator, dtype=torch.uint8)
        for camera in ("front", "wrist")
    }
    image_48x64 = torch.randint(0, 256, (BATCH, 48, 64, 3), generator=generator, dtype=torch.uint8)
    state = torch.randn(BATCH, STATE_DIM, generator=generator) * 2
    noise = torch.randn(BATCH, CHUNK, MAX_DIM, generator=generator)
    tensors = {
        "state": state,
        "noise": noise,
        "image_front_48x64": image_48x64,
        **{f"image_{camera}": pixels for camera, pixels in images.items()},
    }

    def run(pre, post, cameras: dict, policy_config_override=None):
        raw = {"observation.state": state.clone(), "task": list(TASKS)}
        for camera, pixels in cameras.items():
            raw[f"observation.images.{camera}"] = pixels.permute(0, 3, 1, 2).float() / 255.0
        saved = policy.config
        if policy_config_override is not None:
            policy.config = policy_config_override
        try:
            with torch.no_grad():
                return post(policy.predict_action_chunk(pre(raw), noise=noise.clone())).contiguous()
        finally:
            policy.config = saved

    cases = {
        "two_cameras": run(default_pre, default_post, images),
        "missing_camera": run(default_pre, default_post, {"front": images["front"]}),
        "resized_camera": run(default_pre, default_post, {"front": image_48x64, "wrist": images["wrist"]}),
    }
    # What a user's LeRobot does: load the saved checkpoint and processors from disk (its key fixes included).
    reloaded = policy_class.from_pretrained(".", local_files_only=True)
    reloaded.eval()
    with torch.no_grad():
        raw = {"observation.state": state.clone(), "task": list(TASKS)}
        raw.update({f"observation.images.{c}": p.permute(0, 3, 1, 2).float() / 255.0 for c, p in images.items()})
        from_disk = default_post(reloaded.predict_action_chunk(default_pre(raw), noise=noise.clone()))
    assert torch.equal(from_disk, cases["two_cameras"]), "LeRobot's reloaded checkpoint gives other actions"
    one_camera_config = policy_config(("front",), DEFAULT_MODE[kind])
    cases["one_camera"] = run(default_pre, default_post, {"front": images["front"]}, one_camera_config)
    for mode in MODES:
        if mode != DEFAULT_MODE[kind]:
            pre, post = processors(mode, out / f"processors_{mode}")
            cases[f"norm_{mode}"] = run(pre, post, images)
    save_file(
        {**tensors, **{f"actions_{name}": actions for name, actions in cases.items()}}, str(out / "io.safetensors")
    )
    import transformers

    # LeRobot's full-size model (its own sizes), built without memory on the meta device: its weight names and
    # shapes, so that the tests check vla_ros's full-size architecture against them.
    restore_sizes()
    full_config = policy_config(("front", "wrist"), DEFAULT_MODE[kind])
    full_config.image_resolution = (224, 224)
    full_config.device = "meta"
    with torch.device("meta"):
        full_size = policy_class(full_config)
    shapes = {key: list(value.shape) for key, value in full_size.state_dict().items()}
    (out / "full_size_shapes.json.gz").write_bytes(gzip.compress(json.dumps(shapes).encode(), mtime=0))

    (out / "cases.json").write_text(
        json.dumps(
            {
                "policy": kind,
                "tasks": TASKS,
                "cases": sorted(cases),
                "default_mode": DEFAULT_MODE[kind],
                "architecture": {"variants": VARIANTS, "vision": VISION, "vocab_size": len(tokenizer)},
                "made_with": {
                    "lerobot": lerobot.__version__,
                    "transformers": transformers.__version__,
                    "torch": torch.__version__,
                },
                "script": "tools/parity/pi0_fixtures.py",
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    total = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    print(f"wrote {out} ({total / 1e3:.0f} kB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--policy", choices=("pi0", "pi05"), action="append", help="which policy (repeatable; default both)"
    )
    parser.add_argument("--out-dir", type=Path, default=REPO / "test" / "fixtures")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lerobot

    for kind in args.policy or ("pi0", "pi05"):
        cwd = os.getcwd()
        try:
            make(kind, (args.out_dir / f"{kind}_lerobot_{lerobot.__version__}").resolve())
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    sys.exit(main())
