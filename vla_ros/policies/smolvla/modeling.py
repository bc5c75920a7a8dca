"""SmolVLA's network (arXiv 2506.01844) on transformers' SmolVLM classes, trainable and parameter-compatible with
LeRobot's implementation: `SmolVLAModel.state_dict()` keys are LeRobot's `model.safetensors` keys without their
leading `model.`.

The prefix (image tokens, language tokens, one state token) runs through the first layers of SmolVLM's text
model; the suffix (one token per action step, fused with the flow-matching time) runs through the action
expert, a narrower copy of that text model whose layers either attend jointly over [prefix, suffix] or attend
across onto the VLM's keys and values. Prefix tokens never attend to the suffix, so the prefix is computed once
per chunk and cached; training uses the same cached path, which gives the same numbers as one joint pass.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from vla_ros.core.errors import ConfigError
from vla_ros.policies.smolvla.config import SmolVLAConfig
from vla_ros.policies.smolvla.rtc import guidance_weight, prefix_weights

ROPE_MAX_WAVELENGTH = 10_000  # SmolVLA's rotary embedding ignores the text config's rope_theta
TIME_BETA_ALPHA, TIME_BETA_BETA = 1.5, 1.0  # training time ~ Beta(1.5, 1), as in pi0 and SmolVLA
TIME_MIN = 0.001


def expert_intermediate_size(hidden: int, multiplier: int = 4, multiple_of: int = 256) -> int:
    """The expert MLP width SmolVLA derives from its hidden size (Llama's 2/3 * 4 * d, rounded up to 256)."""
    size = multiplier * int(2 * hidden / 3)
    return multiple_of * ((size + multiple_of - 1) // multiple_of)


def rope_tables(positions: Tensor, head_dim: int) -> tuple[Tensor, Tensor]:
    """(cos, sin), each (B, L, 1, head_dim / 2) float32, for rotating heads at integer `positions` (B, L)."""
    half = head_dim // 2
    exponents = (2.0 / head_dim) * torch.arange(half, dtype=torch.float32, device=positions.device)
    angles = positions[..., None].to(torch.float32) / (ROPE_MAX_WAVELENGTH**exponents)
    angles = angles[..., None, :]
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: Tensor, tables: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate the two halves of each head of `x` (B, L, H, D), computed in float32."""
    cos, sin = tables
    first, second = x.to(torch.float32).chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1).to(x.dtype)


def attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor) -> Tensor:
    """Grouped-query attention in float32: query (B, Lq, H, D), key/value (B, Lk, KV, D), mask (B, Lq, Lk) bool.

    Masked scores get float32's most negative value rather than -inf, so that a query with nothing to attend
    to (a padding token) yields a finite average instead of NaN. Returns (B, Lq, H * D) in value's dtype.
    """
    batch, length, heads, head_dim = query.shape
    groups = heads // key.shape[2]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=2)
        value = value.repeat_interleave(groups, dim=2)
    bias = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    bias = bias.masked_fill(~mask, torch.finfo(torch.float32).min)[:, None]
    out = F.scaled_dot_product_attention(
        query.to(torch.float32).transpose(1, 2), key.to(torch.float32).transpose(1, 2),
        value.to(torch.float32).transpose(1, 2), attn_mask=bias, scale=head_dim**-0.5,
    )
    return out.transpose(1, 2).reshape(batch, length, heads * head_dim).to(value.dtype)


# How the vision model numbers its patches' position embeddings; SmolVLA inherits it from the transformers LeRobot
# ran on. "transformers4" (LeRobot <= 0.4): coordinates i / n scaled by (1 - 1e-6) in the pixels' dtype; in float32
# that moves every patch after the first down one bucket, in bfloat16 the factor rounds to 1 and it does not.
# "transformers5" (LeRobot >= 0.5): i * (1 / n) in float32, clamped below 1, bucketed as is.
PATCH_POSITIONS = ("transformers4", "transformers5")


def vision_position_ids(rows: int, cols: int, side: int, dtype: torch.dtype, device,
                        patch_positions: str = "transformers5") -> Tensor:
    """(rows * cols,) position-embedding index of each patch of an unpadded image, as `patch_positions` numbers it."""
    boundaries = torch.arange(1 / side, 1.0, 1 / side, device=device)

    def buckets(count: int) -> Tensor:
        if patch_positions == "transformers4":
            fractions = torch.arange(count, device=device, dtype=dtype) / count * (1 - 1e-6)
        else:
            step = 1.0 / torch.tensor(count, device=device)
            fractions = torch.clamp(torch.arange(count, device=device, dtype=torch.float32) * step, max=1.0 - 1e-6)
        return torch.bucketize(fractions, boundaries, right=True)

    if patch_positions not in PATCH_POSITIONS:
        raise ConfigError(f"patch positions '{patch_positions}' is not one of {', '.join(PATCH_POSITIONS)}")
    return (buckets(rows)[:, None] * side + buckets(cols)[None, :]).flatten()


def block_attention_mask(pad_masks: Tensor, blocks: Tensor) -> Tensor:
    """(B, L, L) bool: token i sees token j when both are real and j's block number is not after i's.

    `blocks` (B, L) marks with 1 each token that starts a new block (big_vision's `mask_ar`): runs of 0 share
    the attention of the block they continue.
    """
    cumulative = torch.cumsum(blocks.to(torch.int64), dim=1)
    visible = cumulative[:, None, :] <= cumulative[:, :, None]
    return visible & pad_masks[:, None, :] & pad_masks[:, :, None]


def sinusoidal_time_embedding(time: Tensor, dim: int, min_period: float, max_period: float) -> Tensor:
    """(B, dim) sine then cosine features of `time` (B,), periods spaced geometrically in [min, max]."""
    if dim % 2:
        raise ConfigError(f"the action expert's width {dim} must be even for its time embedding")
    # float64 where the device has it: the shortest periods make float32 angles lose digits.
    dtype = torch.float32 if time.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angles = (2 * math.pi / period)[None, :] * time[:, None].to(dtype)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


@dataclass
class PrefixCache:
    """Keys (after rotation) and values of every VLM layer for one batch of prefixes."""

    keys: list[Tensor]  # per VLM layer, (B, Lp, KV, D)
    values: list[Tensor]
    pad_masks: Tensor  # (B, Lp) bool: real prefix tokens
    cross: dict[int, tuple[Tensor, Tensor]]  # expert layer index -> its projections of the VLM keys/values
    constant: bool = False  # no gradient flows into the cache (sampling with guidance)

    def detached(self) -> PrefixCache:
        return PrefixCache([k.detach() for k in self.keys], [v.detach() for v in self.values], self.pad_masks,
                           {i: (k.detach(), v.detach()) for i, (k, v) in self.cross.items()}, constant=True)


@dataclass(frozen=True)
class RTCGuidance:
    """What real-time chunking guides a new chunk toward, in the model's normalized, padded action space."""

    actions: Tensor  # (B, n, max_action_dim): the old chunk's not-yet-executed actions, normalized
    inference_delay_steps: int  # d
    execution_horizon: int  # s
    action_dim: int  # dimensions beyond this are padding and are not guided
    max_guidance_weight: float = 5.0  # beta in the RTC paper


class SmolVLMWithExpert(nn.Module):
    """SmolVLM (text model cut to `num_vlm_layers`) and the action expert; LeRobot's module and parameter names."""

    def __init__(self, config: SmolVLAConfig, vlm_config, *, patch_positions: str = "transformers5"):
        super().__init__()
        from transformers import AutoModel, SmolVLMForConditionalGeneration

        if patch_positions not in PATCH_POSITIONS:
            raise ConfigError(f"patch positions '{patch_positions}' is not one of {', '.join(PATCH_POSITIONS)}")
        self.patch_positions = patch_positions

        self.vlm = SmolVLMForConditionalGeneration(vlm_config)
        text_model = self.vlm.model.text_model
        embed = text_model.get_input_embeddings()
        if self.vlm.lm_head.weight is embed.weight:  # untie: LeRobot checkpoints store both, and may differ
            self.vlm.lm_head.weight = nn.Parameter(embed.weight.detach().clone())
        available = len(text_model.layers)
        if config.num_vlm_layers > available:
            raise ConfigError(f"num_vlm_layers {config.num_vlm_layers} is more than the VLM's {available} text "
                              "layers", source=config.source, key="num_vlm_layers")
        if config.num_vlm_layers > 0:
            text_model.layers = text_model.layers[: config.num_vlm_layers]
        self.num_vlm_layers = len(text_model.layers)

        text_config = vlm_config.text_config
        heads = text_config.num_attention_heads
        self.head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        expert_config = copy.deepcopy(text_config)
        expert_config.hidden_size = int(text_config.hidden_size * config.expert_width_multiplier)
        expert_config.intermediate_size = expert_intermediate_size(expert_config.hidden_size)
        expert_config.head_dim = self.head_dim  # the expert keeps the VLM's heads, only its width shrinks
        expert_layers = config.num_expert_layers if config.num_expert_layers > 0 else self.num_vlm_layers
        if self.num_vlm_layers % expert_layers:
            raise ConfigError(f"num_expert_layers {expert_layers} must divide the {self.num_vlm_layers} VLM layers",
                              source=config.source, key="num_expert_layers")
        expert_config.num_hidden_layers = expert_layers
        self.lm_expert = AutoModel.from_config(expert_config)
        self.lm_expert.embed_tokens = None  # the expert reads embeddings, never token ids
        self.expert_hidden_size = expert_config.hidden_size
        self.expert_every = self.num_vlm_layers // expert_layers

        self.self_attention_layers = [
            "cross" not in config.attention_mode
            or (config.self_attn_every_n_layers > 0 and i % config.self_attn_every_n_layers == 0)
            for i in range(self.num_vlm_layers)
        ]
        # Cross-attention layers project the VLM's keys/values, so their inputs have the VLM's width. LeRobot
        # picks them by expert layer index but runs them by VLM layer index; refuse layouts where the two differ.
        kv_width = text_config.num_key_value_heads * self.head_dim
        every = config.self_attn_every_n_layers
        for expert_index, expert in enumerate(self.lm_expert.layers):
            cross = "cross" in config.attention_mode and not (every > 0 and expert_index % every == 0)
            if cross == self.self_attention_layers[expert_index * self.expert_every]:
                raise ConfigError(
                    f"expert layer {expert_index} runs beside VLM layer {expert_index * self.expert_every}, which "
                    f"{'attends jointly' if cross else 'cross-attends'} under self_attn_every_n_layers={every}: "
                    "LeRobot's SmolVLA cannot run this layout; choose num_expert_layers equal to the VLM layers",
                    source=config.source, key="num_expert_layers")
            if cross:
                bias = getattr(expert_config, "attention_bias", False)
                expert.self_attn.k_proj = nn.Linear(kv_width, kv_width, bias=bias)
                expert.self_attn.v_proj = nn.Linear(kv_width, kv_width, bias=bias)

    @property
    def vlm_layers(self) -> nn.ModuleList:
        return self.vlm.model.text_model.layers

    def expert_layer(self, vlm_index: int):
        """The expert layer that runs beside VLM layer `vlm_index`, or None where the expert skips it."""
        if vlm_index % self.expert_every:
            return None
        return self.lm_expert.layers[vlm_index // self.expert_every]

    def embed_images(self, pixels: Tensor) -> Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, tokens, text hidden) connector outputs."""
        vision = self.vlm.model.vision_model
        embeddings = vision.embeddings
        pixels = pixels.to(vision.dtype)
        patches = embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)
        rows, cols = pixels.shape[2] // embeddings.patch_size, pixels.shape[3] // embeddings.patch_size
        positions = vision_position_ids(rows, cols, embeddings.num_patches_per_side, pixels.dtype, pixels.device,
                                        self.patch_positions)
        hidden = patches + embeddings.position_embedding(positions)[None]
        encoded = vision.encoder(inputs_embeds=hidden, attention_mask=None)
        hidden = encoded[0] if isinstance(encoded, tuple) else encoded.last_hidden_state
        return self.vlm.model.connector(vision.post_layernorm(hidden))

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.vlm.model.text_model.get_input_embeddings()(tokens)


def _project_heads(layer, hidden: Tensor, head_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    shape = (*hidden.shape[:-1], -1, head_dim)
    attn = layer.self_attn
    return attn.q_proj(hidden).view(shape), attn.k_proj(hidden).view(shape), attn.v_proj(hidden).view(shape)


def _finish_layer(layer, residual: Tensor, attended: Tensor) -> Tensor:
    hidden = layer.self_attn.o_proj(attended.to(layer.self_attn.o_proj.weight.dtype)) + residual
    return layer.mlp(layer.post_attention_layernorm(hidden)) + hidden


class SmolVLAModel(nn.Module):
    """SmolVLA's flow-matching VLA. Parameter names are LeRobot's `VLAFlowMatching` names.

    Inputs, as `SmolVLAProcessor.preprocess` makes them: images, a list with one (B, 3, H, W) float tensor in
    [-1, 1] per camera; image_masks, a list of (B,) bool (False: a stand-in for a missing camera); lang_tokens
    (B, T) int64 and lang_masks (B, T) bool; state (B, max_state_dim) normalized and zero-padded. Actions are
    (B, chunk_size, max_action_dim), normalized and zero-padded. Time runs from 1 (noise) to 0 (actions).
    """

    def __init__(self, config: SmolVLAConfig, vlm_config, *, image_special_tokens: tuple[int, int] | None = None,
                 patch_positions: str = "transformers5"):
        """`image_special_tokens`: the tokenizer's (fake_image_token_id, global_image_token_id), needed only when
        config.add_image_special_tokens. `patch_positions`: one of PATCH_POSITIONS, as the weights were trained."""
        super().__init__()
        self.config = config
        self.vlm_config = vlm_config
        if config.add_image_special_tokens and image_special_tokens is None:
            raise ConfigError("add_image_special_tokens needs the tokenizer's image token ids",
                              source=config.source, key="add_image_special_tokens")
        self.image_special_tokens = image_special_tokens
        self.vlm_with_expert = SmolVLMWithExpert(config, vlm_config, patch_positions=patch_positions)
        text_hidden = vlm_config.text_config.hidden_size
        expert_hidden = self.vlm_with_expert.expert_hidden_size
        self.state_proj = nn.Linear(config.max_state_dim, text_hidden)
        self.action_in_proj = nn.Linear(config.max_action_dim, expert_hidden)
        self.action_out_proj = nn.Linear(expert_hidden, config.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * expert_hidden, expert_hidden)
        self.action_time_mlp_out = nn.Linear(expert_hidden, expert_hidden)
        self.tied_word_embeddings = False
        self.set_trainable()

    def tie_word_embeddings(self) -> None:
        """Share the VLM's embedding matrix with its language head, as a tied VLM does (SmolVLA reads neither
        head output, but a checkpoint written back must keep them one matrix)."""
        vlm = self.vlm_with_expert.vlm
        vlm.lm_head.weight = vlm.model.text_model.get_input_embeddings().weight
        self.tied_word_embeddings = True

    # -- training setup ----------------------------------------------------------------------------------------

    def set_trainable(self) -> None:
        """requires_grad from the config: freeze_vision_encoder, train_expert_only, train_state_proj."""
        vlm = self.vlm_with_expert.vlm
        for parameter in vlm.parameters():
            parameter.requires_grad_(not self.config.train_expert_only)
        if self.config.freeze_vision_encoder:
            for parameter in vlm.model.vision_model.parameters():
                parameter.requires_grad_(False)
        for parameter in self.state_proj.parameters():
            parameter.requires_grad_(self.config.train_state_proj)

    @property
    def dtype(self) -> torch.dtype:
        return self.action_in_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.action_in_proj.weight.device

    # -- prefix ------------------------------------------------------------------------------------------------

    def embed_prefix(self, images, image_masks, lang_tokens: Tensor, lang_masks: Tensor, state: Tensor
                     ) -> tuple[Tensor, Tensor, Tensor]:
        """(embeddings (B, Lp, hidden), pad masks (B, Lp) bool, block starts (B, Lp) bool) of the prefix.

        Images and language attend to each other; the state token starts a block, so they do not see it.
        """
        if len(images) != len(image_masks) or not images:
            raise ValueError(f"expected one mask per image and at least one image, got {len(images)} images and "
                             f"{len(image_masks)} masks")
        vlm = self.vlm_with_expert
        batch = state.shape[0]
        # One vision pass for every camera: images are embedded independently, so batching them changes nothing.
        image_embs = vlm.embed_images(torch.cat(list(images), dim=0))
        image_embs = image_embs * torch.tensor(image_embs.shape[-1] ** 0.5, dtype=image_embs.dtype,
                                               device=image_embs.device)
        start_embs = end_embs = None
        if self.config.add_image_special_tokens:
            fake, global_image = self.image_special_tokens
            ids = torch.tensor([fake, global_image], dtype=torch.long, device=state.device)
            start_embs = vlm.embed_tokens(ids)[None].expand(batch, -1, -1)
            end_embs = start_embs[:, :1]
        embs, pads = [], []
        for index, mask in enumerate(image_masks):
            if start_embs is not None:
                embs.append(start_embs)
                pads.append(torch.ones(start_embs.shape[:2], dtype=torch.bool, device=state.device))
            emb = image_embs[index * batch : (index + 1) * batch]
            embs.append(emb)
            pads.append(mask.to(torch.bool)[:, None].expand(batch, emb.shape[1]))
            if end_embs is not None:
                embs.append(end_embs)
                pads.append(torch.ones(end_embs.shape[:2], dtype=torch.bool, device=state.device))
        lang_embs = vlm.embed_tokens(lang_tokens)
        embs.append(lang_embs * math.sqrt(lang_embs.shape[-1]))
        pads.append(lang_masks.to(torch.bool))
        state_emb = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None, :]
        embs.append(state_emb)
        pads.append(torch.ones(batch, 1, dtype=torch.bool, device=state.device))
        embs_cat = torch.cat([e.to(state_emb.dtype) for e in embs], dim=1)
        pad_masks = torch.cat(pads, dim=1)
        blocks = torch.zeros_like(pad_masks)
        blocks[:, -1] = True
        # config.prefix_length pads the prefix with masked tokens; masked tokens change no output, so it is ignored.
        return embs_cat, pad_masks, blocks

    def encode_prefix(self, images, image_masks, lang_tokens: Tensor, lang_masks: Tensor, state: Tensor
                      ) -> PrefixCache:
        """Run the prefix through the VLM layers and keep every layer's keys and values."""
        embs, pad_masks, blocks = self.embed_prefix(images, image_masks, lang_tokens, lang_masks, state)
        vlm = self.vlm_with_expert
        mask = block_attention_mask(pad_masks, blocks)
        rope = rope_tables(torch.cumsum(pad_masks.to(torch.int64), dim=1) - 1, vlm.head_dim)
        hidden = embs
        keys, values = [], []
        for index, layer in enumerate(vlm.vlm_layers):
            query, key, value = _project_heads(layer, layer.input_layernorm(hidden), vlm.head_dim)
            key = apply_rope(key, rope)
            keys.append(key)
            values.append(value)
            if index + 1 < vlm.num_vlm_layers:  # the last layer's output feeds nothing: only its keys/values do
                hidden = _finish_layer(layer, hidden, attention(apply_rope(query, rope), key, value, mask))
        return PrefixCache(keys, values, pad_masks, {})

    # -- suffix ------------------------------------------------------------------------------------------------

    def embed_suffix(self, noisy_actions: Tensor, time: Tensor) -> Tensor:
        """(B, H, expert hidden): each noisy action fused with the flow-matching time by a small MLP."""
        action_embs = self.action_in_proj(noisy_actions.to(self.dtype))
        time_embs = sinusoidal_time_embedding(time, action_embs.shape[-1], self.config.min_period,
                                              self.config.max_period).to(action_embs.dtype)
        fused = torch.cat([action_embs, time_embs[:, None, :].expand_as(action_embs)], dim=2)
        return self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))

    def velocity(self, cache: PrefixCache, noisy_actions: Tensor, time: Tensor) -> Tensor:
        """Flow velocity (B, H, max_action_dim) float32 at `noisy_actions` and `time` (B,), given the prefix.

        Action tokens see the whole prefix and the action tokens before them (causal within the chunk).
        """
        vlm = self.vlm_with_expert
        hidden = self.embed_suffix(noisy_actions, time)
        batch, length = hidden.shape[:2]
        prefix_pad = cache.pad_masks
        device = hidden.device
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        cross_mask = prefix_pad[:, None, :].expand(batch, length, prefix_pad.shape[1])
        joint_mask = torch.cat([cross_mask, causal.expand(batch, length, length)], dim=2)
        steps = torch.arange(length, device=device)[None, :]
        joint_rope = rope_tables(prefix_pad.sum(dim=1, keepdim=True) + steps, vlm.head_dim)
        cross_rope = rope_tables(steps.expand(batch, length), vlm.head_dim)
        for index, joint in enumerate(vlm.self_attention_layers):
            layer = vlm.expert_layer(index)
            if layer is None:
                continue
            normed = layer.input_layernorm(hidden)
            if joint:
                query, key, value = _project_heads(layer, normed, vlm.head_dim)
                key = torch.cat([cache.keys[index], apply_rope(key, joint_rope)], dim=1)
                value = torch.cat([cache.values[index], value], dim=1)
                attended = attention(apply_rope(query, joint_rope), key, value, joint_mask)
            else:
                key, value = self._cross_keys_values(cache, index, layer)
                query = layer.self_attn.q_proj(normed).view(batch, length, -1, vlm.head_dim)
                attended = attention(apply_rope(query, cross_rope), key, value, cross_mask)
            hidden = _finish_layer(layer, hidden, attended)
        hidden = vlm.lm_expert.norm(hidden)
        return self.action_out_proj(hidden.to(self.action_out_proj.weight.dtype)).to(torch.float32)

    def _cross_keys_values(self, cache: PrefixCache, index: int, layer) -> tuple[Tensor, Tensor]:
        # The same for every denoising step of a chunk: project once, reuse.
        if index not in cache.cross:
            keys, values = cache.keys[index], cache.values[index]
            batch, length = keys.shape[:2]
            head_dim = self.vlm_with_expert.head_dim
            attn = layer.self_attn
            dtype = attn.k_proj.weight.dtype
            with torch.set_grad_enabled(torch.is_grad_enabled() and not cache.constant):
                cache.cross[index] = (
                    attn.k_proj(keys.reshape(batch, length, -1).to(dtype)).view(batch, length, -1, head_dim),
                    attn.v_proj(values.reshape(batch, length, -1).to(dtype)).view(batch, length, -1, head_dim),
                )
        return cache.cross[index]

    # -- flow matching -----------------------------------------------------------------------------------------

    @staticmethod
    def sample_time(batch: int, device, generator: torch.Generator | None = None) -> Tensor:
        """Training times (B,) ~ Beta(1.5, 1) * 0.999 + 0.001: more weight near the noise end."""
        # Beta(a, 1) is U^(1/a): a closed form that takes a generator, unlike torch.distributions.Beta.
        uniform = torch.rand(batch, generator=generator, device=device, dtype=torch.float32)
        return uniform ** (1.0 / TIME_BETA_ALPHA) * (1 - TIME_MIN) + TIME_MIN

    def flow_matching_loss(self, images, image_masks, lang_tokens: Tensor, lang_masks: Tensor, state: Tensor,
                           actions: Tensor, noise: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        """Per-element squared error (B, chunk_size, max_action_dim) float32 of the predicted velocity.

        x_t = t * noise + (1 - t) * actions must move with velocity noise - actions. Mask padded action
        dimensions and steps past an episode's end before averaging.
        """
        cache = self.encode_prefix(images, image_masks, lang_tokens, lang_masks, state)
        return self.flow_matching_loss_on_prefix(cache, actions, noise, time)

    def flow_matching_loss_on_prefix(self, cache: PrefixCache, actions: Tensor, noise: Tensor | None = None,
                                     time: Tensor | None = None) -> Tensor:
        """flow_matching_loss for prefixes already encoded (so that other training losses can share them)."""
        actions = actions.to(torch.float32)
        if noise is None:
            noise = torch.randn_like(actions)
        if time is None:
            time = self.sample_time(actions.shape[0], actions.device)
        t = time.to(torch.float32)[:, None, None]
        noisy = t * noise + (1 - t) * actions
        velocity = self.velocity(cache, noisy, time.to(torch.float32))
        return F.mse_loss(velocity, noise - actions, reduction="none")

    def sample_actions(self, images, image_masks, lang_tokens: Tensor, lang_masks: Tensor, state: Tensor,
                       noise: Tensor | None = None, prefix: RTCGuidance | None = None) -> Tensor:
        """Normalized actions (B, chunk_size, max_action_dim) float32: Euler steps from noise (t=1) to t=0.

        With `prefix`, every step is guided toward the old chunk's remaining actions (real-time chunking);
        the guidance needs gradients through the expert, so call this under torch.no_grad, not inference_mode.
        """
        batch = state.shape[0]
        shape = (batch, self.config.chunk_size, self.config.max_action_dim)
        if noise is None:
            noise = torch.randn(shape, dtype=torch.float32, device=state.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise of shape {tuple(noise.shape)}, expected {shape}")
        cache = self.encode_prefix(images, image_masks, lang_tokens, lang_masks, state)
        steps = self.config.num_steps
        dt = -1.0 / steps
        target = weights = None
        if prefix is not None:
            cache = cache.detached()
            target, weights = self._guidance_target(prefix, batch, state.device)
        x = noise.to(torch.float32)
        for step in range(steps):
            t = 1.0 + step * dt
            time = torch.full((batch,), t, dtype=torch.float32, device=state.device)
            if prefix is None:
                velocity = self.velocity(cache, x, time)
            else:
                velocity = self._guided_velocity(cache, x, time, t, target, weights, prefix.max_guidance_weight)
            x = x + dt * velocity
        return x

    def _guidance_target(self, prefix: RTCGuidance, batch: int, device) -> tuple[Tensor, Tensor]:
        horizon, width = self.config.chunk_size, self.config.max_action_dim
        old = prefix.actions.to(device=device, dtype=torch.float32)
        if old.ndim != 3 or old.shape[0] != batch or old.shape[2] != width:
            raise ValueError(f"prefix actions of shape {tuple(old.shape)}, expected ({batch}, n, {width})")
        n = min(old.shape[1], horizon)
        target = torch.zeros(batch, horizon, width, dtype=torch.float32, device=device)
        target[:, :n] = old[:, :n]
        steps = torch.as_tensor(prefix_weights(horizon, n, prefix.inference_delay_steps, prefix.execution_horizon),
                                dtype=torch.float32, device=device)
        dims = (torch.arange(width, device=device) < prefix.action_dim).to(torch.float32)
        return target, steps[:, None] * dims[None, :]

    def _guided_velocity(self, cache: PrefixCache, x: Tensor, time: Tensor, t: float, target: Tensor,
                         weights: Tensor, max_weight: float) -> Tensor:
        # Pseudo-inverse guidance (RTC, arXiv 2506.07339 eq. 2-5) in this model's time convention: the clean
        # estimate is x - t * v, and stepping toward t=0 with v + c * dL/dx lowers the weighted error L.
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            velocity = self.velocity(cache, x_in, time)
            clean = x_in - t * velocity
            error = 0.5 * (weights * (target - clean) ** 2).sum()
            (gradient,) = torch.autograd.grad(error, x_in)
        return velocity.detach() + guidance_weight(1.0 - t, max_weight) * gradient
