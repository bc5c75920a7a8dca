"""Small SmolVLM backbones and word-level tokenizers built from scratch, with no download.

Tests build tiny random SmolVLA checkpoints from these, and the built-in policy is a small configuration of
the same architecture. Only transformers and tokenizers are imported (no vla_ros core), so scripts running in
other environments (the LeRobot parity fixture) can use this module too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN = "<pad>", "<unk>", "<s>"
# SmolVLM's tokenizer names these; LeRobot's SmolVLA reads the ids of the first two even when it does not use them.
SMOLVLM_SPECIAL_TOKENS = {
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "image_token": "<image>",
    "end_of_utterance_token": "<end_of_utterance>",
}


def tiny_vlm_config(
    *,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int = 32,
    vision_layers: int = 1,
    vision_heads: int = 2,
    text_hidden: int = 64,
    text_layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    vocab_size: int = 64,
    scale_factor: int = 2,
    text_intermediate: int | None = None,
    vision_intermediate: int | None = None,
    max_position_embeddings: int = 2048,
    tie_word_embeddings: bool = False,
):
    """A transformers SmolVLMConfig of the given sizes (Llama text model, SigLIP-style vision model).

    `image_size` / `patch_size` patches per side must be divisible by `scale_factor` (the connector's pixel
    shuffle); each image then becomes (image_size / patch_size / scale_factor)^2 tokens. `tie_word_embeddings`:
    the language head shares the embedding matrix (LeRobot then saves only one of the two tensors).
    """
    from transformers import SmolVLMConfig

    patches_per_side = image_size // patch_size
    if image_size % patch_size or patches_per_side % scale_factor:
        raise ValueError(f"image_size {image_size} / patch_size {patch_size} must be a whole number of patches "
                         f"divisible by scale_factor {scale_factor}")
    if text_hidden % heads or heads % kv_heads:
        raise ValueError(f"text_hidden {text_hidden} must divide into {heads} heads, and heads into {kv_heads} "
                         "key/value heads")
    vision_config = {
        "model_type": "smolvlm_vision",
        "hidden_size": vision_hidden,
        "intermediate_size": vision_intermediate or 4 * vision_hidden,
        "num_hidden_layers": vision_layers,
        "num_attention_heads": vision_heads,
        "image_size": image_size,
        "patch_size": patch_size,
        "num_channels": 3,
    }
    text_config = {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": text_hidden,
        "intermediate_size": text_intermediate or 4 * text_hidden,
        "num_hidden_layers": text_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": text_hidden // heads,
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": tie_word_embeddings,
        "pad_token_id": 0,
    }
    return SmolVLMConfig(
        vision_config=vision_config,
        text_config=text_config,
        scale_factor=scale_factor,
        image_token_id=min(3, vocab_size - 1),
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=0,
    )


def build_word_tokenizer(words: Iterable[str], path: str | Path, *, model_max_length: int = 512):
    """Write a word-level, lower-casing Hugging Face tokenizer for `words` into directory `path`.

    Ids: <pad> 0, <unk> 1, <s> 2 (prepended to every text), SmolVLM's special tokens, then the words in
    first-seen order. Returns the tokenizer as AutoTokenizer loads it from `path`; `len()` of it is the
    smallest vocab_size a model using it can have.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import AutoTokenizer

    vocab: dict[str, int] = {}
    for token in (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, *SMOLVLM_SPECIAL_TOKENS.values()):
        vocab.setdefault(token, len(vocab))
    for word in words:
        word = word.strip().lower()
        if word:
            vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])]
    )
    tokenizer.add_special_tokens([PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, *SMOLVLM_SPECIAL_TOKENS.values()])
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path / "tokenizer.json"))
    special = {"bos_token": BOS_TOKEN, "pad_token": PAD_TOKEN, "unk_token": UNK_TOKEN}
    # Written by hand rather than by save_pretrained so that transformers 4.x and 5.x both read it.
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "extra_special_tokens": SMOLVLM_SPECIAL_TOKENS,
        "model_max_length": model_max_length,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
    (path / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def tiny_smolvla_config(
    *,
    state_dim: int,
    action_dim: int,
    camera_keys: Iterable[str],
    image_size: int,
    text_layers: int,
    chunk_size: int = 10,
    num_steps: int = 10,
    max_state_dim: int = 32,
    max_action_dim: int = 32,
    tokenizer_max_length: int = 16,
    expert_width_multiplier: float = 0.75,
    train_from_scratch: bool = True,
    **overrides,
):
    """A SmolVLAConfig for a small model on a `tiny_vlm_config` backbone with `text_layers` layers.

    `train_from_scratch` trains every part (LeRobot's defaults freeze the VLM, as for a pretrained backbone).
    Other SmolVLAConfig fields can be given as keyword arguments.
    """
    from vla_ros.policies.smolvla.config import Feature, SmolVLAConfig

    inputs = {"observation.state": Feature("STATE", (state_dim,))}
    for key in camera_keys:
        inputs[f"observation.images.{key}"] = Feature("VISUAL", (3, image_size, image_size))
    values = {
        "input_features": inputs,
        "output_features": {"action": Feature("ACTION", (action_dim,))},
        "chunk_size": chunk_size,
        "n_action_steps": chunk_size,
        "num_steps": num_steps,
        "max_state_dim": max_state_dim,
        "max_action_dim": max_action_dim,
        "resize_imgs_with_padding": (image_size, image_size),
        "tokenizer_max_length": tokenizer_max_length,
        "vlm_model_name": "vlm",
        "num_vlm_layers": text_layers,
        "num_expert_layers": -1,
        "self_attn_every_n_layers": 2,
        "expert_width_multiplier": expert_width_multiplier,
        "freeze_vision_encoder": not train_from_scratch,
        "train_expert_only": not train_from_scratch,
    }
    values.update(overrides)
    return SmolVLAConfig(**values)
