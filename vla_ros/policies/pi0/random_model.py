"""Randomly initialised pi0 models with a matching processor, for tests and benchmarks (nothing downloaded).

`random_pi0(tiny=False)` has the sizes of PI0Config's defaults (PaliGemma 3B + a 300M action expert,
about 3.3B parameters); `tiny=True` a model of about 0.1M parameters that runs in milliseconds. The tokenizer
is a small word-level one built here: it yields the same prompt layout as PaliGemma's, and token ids stay
below the model's vocabulary size, so the sequence lengths and the compute are those of the real model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PI0Config, PI0ForConditionalGeneration, PI0Processor, PreTrainedTokenizerFast
from transformers.initialization import no_init_weights

from vla_ros.policies.pi0.processing import build_processor

WORDS = ("touch", "pick", "up", "place", "put", "the", "a", "red", "green", "blue", "cube", "in", "on", "box", "warm")
SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}

TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8
# Two layers of everything: enough for attention across image, text, state and action tokens to matter.
TINY_TEXT = {"model_type": "gemma", "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
             "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16}
TINY_VISION = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 2, "patch_size": TINY_PATCH_SIZE, "image_size": TINY_IMAGE_SIZE,
               "vision_use_head": False}
TINY_EXPERT = {"model_type": "gemma", "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16}


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a few instruction words, with PaliGemma's special tokens."""
    vocabulary = [*SPECIAL_TOKENS.values(), *WORDS]
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(vocabulary)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def random_pi0(*, tiny: bool, state_dim: int = 6, action_dim: int = 6, chunk_size: int = 50,
               num_inference_steps: int = 10, camera_keys: Sequence[str] = ("front", "wrist"),
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
               random_weights: bool = True) -> tuple[PI0ForConditionalGeneration, PI0Processor]:
    """(model, processor); the processor's statistics are the identity (mean 0, std 1).

    The model is allocated once, on `device` in `dtype` (no float32 copy of a 3B model is ever made).
    `random_weights`: transformers' own initialisation; else zeros, for benchmarks: the compute does not
    depend on the values, and random numbers for 3.3B parameters take longer on a CPU than reading a checkpoint.
    """
    image_size = TINY_IMAGE_SIZE if tiny else 224
    patch_size = TINY_PATCH_SIZE if tiny else 14
    processor_config = {
        "state_mean": [0.0] * state_dim, "state_std": [1.0] * state_dim,
        "actions_mean": [0.0] * action_dim, "actions_std": [1.0] * action_dim, "chunk_size": chunk_size,
        "image_processor": {"size": {"max_height": image_size, "max_width": image_size},
                            "pad_size": {"height": image_size, "width": image_size},
                            "image_seq_length": (image_size // patch_size) ** 2},
    }
    processor = build_processor(None, processor_config, tokenizer=word_tokenizer())
    config = PI0Config(chunk_size=chunk_size, num_inference_steps=num_inference_steps,
                       camera_keys=list(camera_keys), **_sub_configs(tiny, processor))
    torch.manual_seed(seed)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), no_init_weights():
            model = PI0ForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    with torch.no_grad():
        if random_weights:
            model.init_weights()
        else:
            for parameter in model.parameters():
                parameter.zero_()
    return model.eval(), processor


def _sub_configs(tiny: bool, processor: PI0Processor) -> dict:
    if tiny:
        text = {**TINY_TEXT, "vocab_size": len(processor.tokenizer)}
        return {"vlm_config": {"model_type": "paligemma", "text_config": text, "vision_config": TINY_VISION,
                               "projection_dim": TINY_TEXT["hidden_size"], "image_token_id": processor.image_token_id},
                "dit_config": TINY_EXPERT}
    # PI0Config's own sizes; only the image token moves to where this tokenizer put it.
    defaults = PI0Config()
    vlm = defaults.vlm_config.to_dict()
    vlm["image_token_id"] = processor.image_token_id
    return {"vlm_config": vlm, "dit_config": defaults.dit_config.to_dict()}


def save_checkpoint(directory: Path, model: PI0ForConditionalGeneration, processor: PI0Processor) -> Path:
    """Write model and processor the way a transformers pi0 checkpoint is laid out."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    # Name the image processor transformers registers for pi0, not the PIL stand-in this package runs.
    path = directory / "processor_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["image_processor"]["image_processor_type"] = "PI0ImageProcessor"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return directory

