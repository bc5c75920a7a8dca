"""pi0 and pi0.5 (openpi, as LeRobot >= 0.5 runs them) on transformers' SigLIP, PaliGemma projector and Gemma.

The VLM (images, then the prompt) runs once per chunk and leaves its keys and values; the action expert then
runs `num_inference_steps` Euler steps of flow matching from noise at t=1 to actions at t=0, attending to them.
pi0 feeds the state as one token and fuses the flow time into the action tokens; pi0.5 has the state in the prompt
(see processor.py) and conditions every expert norm on the time (adaptive RMS norm, with gated residuals).
Module names follow LeRobot's, so that its model.safetensors loads by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig, SiglipVisionModel
from transformers.models.gemma.modeling_gemma import (
    GemmaAttention,
    GemmaMLP,
    GemmaRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)
from transformers.models.paligemma.modeling_paligemma import PaliGemmaMultiModalProjector

from vla_ros.policies.pi05 import config as pi_config
from vla_ros.policies.pi05.config import GemmaVariant, PiConfig

MASKED = -2.3819763e38  # openpi's additive attention mask value (LeRobot's OPENPI_ATTENTION_MASK_VALUE)


class AdaptiveRMSNorm(nn.Module):
    """Gemma's RMS norm; with `cond_dim`, scale, shift and a residual gate come from the condition (adaRMS)."""

    def __init__(self, dim: int, eps: float, cond_dim: int | None = None):
        super().__init__()
        self.eps = eps
        if cond_dim is None:
            self.weight = nn.Parameter(torch.zeros(dim))
            self.dense = None
        else:
            self.dense = nn.Linear(cond_dim, 3 * dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        variance = torch.mean(torch.square(x.float()), dim=-1, keepdim=True)
        normed = x * torch.rsqrt(variance + self.eps)
        if self.dense is None:
            return (normed * (1.0 + self.weight.float())).type_as(x), None
        modulation = self.dense(cond)
        if x.ndim == 3:
            modulation = modulation.unsqueeze(1)
        scale, shift, gate = modulation.chunk(3, dim=-1)
        return (normed * (1 + scale.float()) + shift.float()).to(x.dtype), gate.to(x.dtype)


def _gated(residual: Tensor, update: Tensor, gate: Tensor | None) -> Tensor:
    return residual + update if gate is None else residual + update * gate


class DecoderLayer(nn.Module):
    def __init__(self, config: GemmaConfig, index: int, cond_dim: int | None):
        super().__init__()
        self.self_attn = GemmaAttention(config, index)
        self.mlp = GemmaMLP(config)
        self.input_layernorm = AdaptiveRMSNorm(config.hidden_size, config.rms_norm_eps, cond_dim)
        self.post_attention_layernorm = AdaptiveRMSNorm(config.hidden_size, config.rms_norm_eps, cond_dim)

    def forward(
        self,
        hidden: Tensor,
        rotary: tuple[Tensor, Tensor],
        mask: Tensor,
        cond: Tensor | None = None,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One layer; `past`: the prefix's keys and values to attend to as well. Returns (hidden, (keys, values))."""
        attention = self.self_attn
        normed, gate = self.input_layernorm(hidden, cond)
        shape = (*normed.shape[:-1], -1, attention.head_dim)
        query = attention.q_proj(normed).view(shape).transpose(1, 2)
        key = attention.k_proj(normed).view(shape).transpose(1, 2)
        value = attention.v_proj(normed).view(shape).transpose(1, 2)
        query, key = apply_rotary_pos_emb(query, key, *rotary)
        own = (key, value)
        if past is not None:
            key, value = torch.cat([past[0], key], dim=2), torch.cat([past[1], value], dim=2)
        output, _ = eager_attention_forward(attention, query, key, value, mask, attention.scaling)
        output = attention.o_proj(output.reshape(*hidden.shape[:-1], -1))
        hidden = _gated(hidden, output, gate)
        normed, gate = self.post_attention_layernorm(hidden, cond)
        return _gated(hidden, self.mlp(normed), gate), own


class GemmaStack(nn.Module):
    """Gemma's decoder layers and final norm (LeRobot's PiGemmaModel), run by hand to share keys and values."""

    def __init__(self, config: GemmaConfig, cond_dim: int | None, *, with_embeddings: bool):
        super().__init__()
        if with_embeddings:
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i, cond_dim) for i in range(config.num_hidden_layers))
        self.norm = AdaptiveRMSNorm(config.hidden_size, config.rms_norm_eps, cond_dim)
        self.rotary_emb = GemmaRotaryEmbedding(config=config)

    def forward(
        self,
        hidden: Tensor,
        position_ids: Tensor,
        mask: Tensor,
        cond: Tensor | None = None,
        past: list[tuple[Tensor, Tensor]] | None = None,
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        rotary = self.rotary_emb(hidden, position_ids)
        cache = []
        for index, layer in enumerate(self.layers):
            hidden, own = layer(hidden, rotary, mask, cond, None if past is None else past[index])
            cache.append(own)
        return self.norm(hidden, cond)[0], cache


def _text_config(variant: GemmaVariant, *, vocab_size: int) -> GemmaConfig:
    return GemmaConfig(
        hidden_size=variant.width,
        intermediate_size=variant.mlp_dim,
        num_attention_heads=variant.num_heads,
        num_key_value_heads=variant.num_kv_heads,
        head_dim=variant.head_dim,
        num_hidden_layers=variant.depth,
        vocab_size=vocab_size,
        hidden_activation="gelu_pytorch_tanh",
    )


def vision_config(image_size: int, text_width: int) -> SiglipVisionConfig:
    """LeRobot's vision tower: PaliGemma's default SigLIP, with the image size and its fixed overrides."""
    vision = PaliGemmaConfig().vision_config
    for key, value in {**pi_config.VISION_DEFAULTS, **pi_config.VISION_OVERRIDES}.items():
        setattr(vision, key, value)
    vision.image_size = image_size
    vision.projection_dim = text_width  # PaliGemma projects image features to the text width
    return vision


class _Container(nn.Module):
    """A named level of LeRobot's module tree, so that weight names match."""


class PiFlowModel(nn.Module):
    """LeRobot's PI0Pytorch / PI05Pytorch for inference; `sample_actions` takes prepared tensors."""

    def __init__(self, config: PiConfig):
        super().__init__()
        self.config = config
        vlm, expert = config.vlm, config.expert
        vocab_size = pi_config.VOCAB_SIZE
        vision = vision_config(config.image_resolution[0], vlm.width)
        paligemma = _Container()
        paligemma.model = _Container()
        paligemma.model.vision_tower = SiglipVisionModel(vision)
        paligemma.model.multi_modal_projector = PaliGemmaMultiModalProjector(_ProjectorConfig(vision))
        paligemma.model.language_model = GemmaStack(
            _text_config(vlm, vocab_size=vocab_size), None, with_embeddings=True
        )
        gemma_expert = _Container()
        cond_dim = expert.width if config.is_pi05 else None
        gemma_expert.model = GemmaStack(_text_config(expert, vocab_size=vocab_size), cond_dim, with_embeddings=False)
        self.paligemma_with_expert = _Container()
        self.paligemma_with_expert.paligemma = paligemma
        self.paligemma_with_expert.gemma_expert = gemma_expert
        self.action_in_proj = nn.Linear(config.max_action_dim, expert.width)
        self.action_out_proj = nn.Linear(expert.width, config.max_action_dim)
        if config.is_pi05:
            self.time_mlp_in = nn.Linear(expert.width, expert.width)
            self.time_mlp_out = nn.Linear(expert.width, expert.width)
        else:
            self.state_proj = nn.Linear(config.max_state_dim, expert.width)
            self.action_time_mlp_in = nn.Linear(2 * expert.width, expert.width)
            self.action_time_mlp_out = nn.Linear(expert.width, expert.width)

    @property
    def _vlm(self) -> GemmaStack:
        return self.paligemma_with_expert.paligemma.model.language_model

    @property
    def _expert(self) -> GemmaStack:
        return self.paligemma_with_expert.gemma_expert.model

    def embed_prefix(
        self, images: list[Tensor], image_masks: list[Tensor], tokens: Tensor, token_masks: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(embeddings (B, P, W), pad mask (B, P)): image tokens of each camera, then the prompt's tokens."""
        paligemma = self.paligemma_with_expert.paligemma.model
        embeddings, pad_masks = [], []
        for image, mask in zip(images, image_masks, strict=True):
            vision_dtype = paligemma.multi_modal_projector.linear.weight.dtype
            features = paligemma.vision_tower(image.to(vision_dtype)).last_hidden_state
            features = paligemma.multi_modal_projector(features)
            embeddings.append(features)
            pad_masks.append(mask[:, None].expand(*features.shape[:2]))
        # Gemma scales its token embeddings by sqrt(width) (transformers' scaled word embedding).
        text = self._vlm.embed_tokens(tokens)
        embeddings.append(text * torch.tensor(text.shape[-1] ** 0.5, dtype=text.dtype))
        pad_masks.append(token_masks)
        return torch.cat(embeddings, dim=1), torch.cat(pad_masks, dim=1)

    def embed_suffix(
        self, state: Tensor | None, noisy_actions: Tensor, time: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(embeddings (B, S, W), causal block starts (S,), adaRMS condition or None)."""
        time_embedding = sinusoidal_embedding(
            time, self.action_in_proj.out_features, self.config.min_period, self.config.max_period
        ).type(time.dtype)
        dtype = self.action_in_proj.weight.dtype  # float32 in LeRobot's float32 runs: the casts are no-ops there
        time_embedding = time_embedding.to(dtype)
        actions = self.action_in_proj(noisy_actions.to(dtype))
        chunk = self.config.chunk_size
        if self.config.is_pi05:
            condition = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time_embedding))))
            return actions, _block_starts([1] + [0] * (chunk - 1), actions.device), condition
        fused = torch.cat([actions, time_embedding[:, None, :].expand_as(actions)], dim=2)
        fused = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))
        state_token = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None, :]
        return torch.cat([state_token, fused], dim=1), _block_starts([1, 1] + [0] * (chunk - 1), fused.device), None

    @torch.no_grad()
    def sample_actions(
        self,
        images: list[Tensor],
        image_masks: list[Tensor],
        tokens: Tensor,
        token_masks: Tensor,
        state: Tensor | None,
        noise: Tensor,
    ) -> Tensor:
        """(B, chunk_size, max_action_dim) normalized actions from `noise` of that shape (x at t=1)."""
        prefix, prefix_pad = self.embed_prefix(images, image_masks, tokens, token_masks)
        dtype = self._vlm.layers[0].self_attn.q_proj.weight.dtype
        prefix_mask = _attention_mask(
            prefix_pad, prefix_pad, torch.zeros(prefix_pad.shape[1], dtype=torch.bool, device=prefix.device)
        )
        _, cache = self._vlm(prefix.to(dtype), torch.cumsum(prefix_pad, dim=1) - 1, prefix_mask)
        steps = self.config.num_inference_steps
        dt = -1.0 / steps
        x = noise
        for step in range(steps):
            time = torch.tensor(1.0 + step * dt, dtype=torch.float32, device=noise.device).expand(noise.shape[0])
            x = x + dt * self.velocity(prefix_pad, cache, state, x, time)
        return x

    def velocity(
        self, prefix_pad: Tensor, cache: list[tuple[Tensor, Tensor]], state: Tensor | None, x: Tensor, time: Tensor
    ) -> Tensor:
        """The expert's flow velocity at (x, time), attending to the prefix's cached keys and values."""
        suffix, starts, condition = self.embed_suffix(state, x, time)
        batch, length = suffix.shape[:2]
        suffix_pad = torch.ones(batch, length, dtype=torch.bool, device=suffix.device)
        blocks = torch.cumsum(starts, dim=0)
        suffix_2d = (blocks[None, :] <= blocks[:, None])[None] & suffix_pad[:, None, :] & suffix_pad[:, :, None]
        full = torch.cat([prefix_pad[:, None, :].expand(batch, length, prefix_pad.shape[1]), suffix_2d], dim=2)
        mask = torch.where(full[:, None], 0.0, MASKED)
        positions = prefix_pad.sum(dim=-1)[:, None] + torch.cumsum(suffix_pad, dim=1) - 1
        dtype = self._expert.layers[0].self_attn.q_proj.weight.dtype
        output, _ = self._expert(suffix.to(dtype), positions, mask, condition, cache)
        output = output[:, -self.config.chunk_size :].to(torch.float32)
        return self.action_out_proj(output.to(self.action_out_proj.weight.dtype)).to(torch.float32)


class _ProjectorConfig:
    """What PaliGemmaMultiModalProjector reads from a PaliGemmaConfig."""

    def __init__(self, vision: SiglipVisionConfig):
        self.vision_config = vision


def _block_starts(starts: list[int], device) -> Tensor:
    return torch.tensor(starts, dtype=torch.int64, device=device)


def _attention_mask(query_pad: Tensor, key_pad: Tensor, starts: Tensor) -> Tensor:
    """Additive (B, 1, Q, K) mask: prefix-LM blocks (big_vision's make_att_2d_masks) within the padding."""
    blocks = torch.cumsum(starts.to(torch.int64), dim=0)
    allowed = (blocks[None, :] <= blocks[:, None])[None] & key_pad[:, None, :] & query_pad[:, :, None]
    return torch.where(allowed[:, None], 0.0, MASKED)


def sinusoidal_embedding(time: Tensor, dimension: int, min_period: float, max_period: float) -> Tensor:
    """openpi's sine-cosine embedding of the flow time, computed in float64 as LeRobot does (MPS has none)."""
    dtype = torch.float32 if time.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dimension // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (1.0 / period * 2 * math.pi)[None, :] * time[:, None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)
