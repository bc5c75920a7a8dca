"""LoRA adapters: start at the base model, train only themselves, and merge back into plain linear layers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="LoRA needs torch")

from torch import nn  # noqa: E402

from vla_ros.policies.lora import LoRALinear, add_lora, merge_lora  # noqa: E402


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.v_proj, self.mlp = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.mlp(torch.tanh(self.q_proj(x)) * self.v_proj(x))


def test_adapters_start_at_the_base_model_and_train_alone():
    torch.manual_seed(0)
    model, x = nn.Sequential(Attention(), nn.Linear(4, 8), Attention()), torch.randn(16, 8)
    before = model(x).detach()
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert add_lora(model, rank=2, alpha=4.0) == 4  # q_proj and v_proj of both blocks
    torch.testing.assert_close(model(x), before)  # B = 0: the same function
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(5):
        loss = (model(x) - 1.0).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model(x).detach()
    assert not torch.allclose(after, before)
    for name, p in model.named_parameters():  # nothing but the adapters moved
        base_name = name.replace(".base.", ".")
        if base_name in frozen:
            torch.testing.assert_close(p, frozen[base_name])

    assert merge_lora(model) == 4
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(x), after, rtol=1e-5, atol=1e-6)  # merged weights compute the same
    assert set(dict(model.named_parameters())) == set(frozen)  # the original architecture and names


def test_a_model_without_the_target_layers_is_refused():
    with pytest.raises(ValueError, match=r"no nn.Linear layers named \['q_proj'\]"):
        add_lora(nn.Sequential(nn.Linear(2, 2)), targets=("q_proj",))
