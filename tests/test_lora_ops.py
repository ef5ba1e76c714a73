"""lora_linear (the fused LoRA layer op) and LoRALayer: parity with the reference (forward,
every gradient, with and without dropout mask and bias), float64 gradcheck, opcheck, no
gradient for the frozen base, PEFT's LoRA layer computing the same, and input errors; the
dropout_mask op (parity with its reference, statistics, thread independence, opcheck)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import skelang.ops as ops
import skelang.reference as reference
from skelang.lm.lora import LoRALayer, dropout_probability


def lora_inputs(shape=(2, 5, 7), out=6, r=3, dtype=torch.float64, bias=True, masked=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, dtype=dtype, generator=g).requires_grad_()
    weight = torch.randn(out, shape[-1], dtype=dtype, generator=g)
    b = torch.randn(out, dtype=dtype, generator=g) if bias else None
    A = torch.randn(r, shape[-1], dtype=dtype, generator=g).requires_grad_()
    B = torch.randn(out, r, dtype=dtype, generator=g).requires_grad_()
    keep = torch.rand(*shape, generator=g) > 0.2
    mask = {False: None, True: keep.to(dtype) / 0.8, "bool": keep}[masked]
    return x, weight, b, A, B, mask


@pytest.mark.parametrize("masked", [True, "bool"])
def test_parity_across_row_blocks(masked):
    # the masked products run in row blocks of 2^19 / in rows: 64 here, so 150 rows make 3
    x, weight, b, A, B, mask = lora_inputs((150, 8192), out=5, masked=masked)
    y = ops.lora_linear(x, weight, b, A, B, 0.75, mask)
    y_ref = reference.lora_linear(x, weight, b, A, B, 0.75, mask)
    torch.testing.assert_close(y, y_ref)
    grad_y = torch.randn_like(y)
    for grad, grad_ref in zip(torch.autograd.grad(y, (x, A, B), grad_y), torch.autograd.grad(y_ref, (x, A, B), grad_y)):
        torch.testing.assert_close(grad, grad_ref)


def test_a_bool_mask_is_the_float_mask_with_its_scale_in_scaling():
    x, weight, b, A, B, keep = lora_inputs(masked="bool")
    y_bool = ops.lora_linear(x, weight, b, A, B, 0.5 / 0.8, keep)
    y_float = ops.lora_linear(x, weight, b, A, B, 0.5, keep.double() / 0.8)
    torch.testing.assert_close(y_bool, y_float)
    grad_y = torch.randn_like(y_bool)
    for grad_bool, grad_float in zip(
        torch.autograd.grad(y_bool, (x, A, B), grad_y), torch.autograd.grad(y_float, (x, A, B), grad_y)
    ):
        torch.testing.assert_close(grad_bool, grad_float)


def test_backward_keeps_x_the_bool_mask_and_xa_only():
    x, weight, b, A, B, keep = lora_inputs(shape=(64, 32), out=48, r=4, dtype=torch.float32, masked="bool")
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        ops.lora_linear(x, weight, b, A, B, 0.5, keep)
    activations = {
        t.data_ptr(): t.numel() * t.element_size() for t in saved if t.shape[:-1] == x.shape[:-1]
    }  # per-token tensors (not the weights)
    assert sorted(activations.values()) == sorted([64 * 4 * 4, 64 * 32, 64 * 32 * 4])  # xa, mask, x


def test_frozen_base_gets_no_gradient():
    x, weight, b, A, B, mask = lora_inputs()
    weight.requires_grad_(True)  # even if asked, the op treats the base as frozen
    ops.lora_linear(x, weight, b, A, B, 0.5, mask).sum().backward()
    assert weight.grad is None and A.grad is not None and B.grad is not None


def single_adapter(base: nn.Module, r: int, alpha: float = 16.0, dropout: float = 0.0) -> LoRALayer:
    layer = LoRALayer(base)
    layer.add_adapter("default", r, alpha, dropout)
    return layer


def test_layer_starts_as_its_base_and_matches_peft():
    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    layer = single_adapter(base, r=4, alpha=8)
    x = torch.randn(3, 12)
    torch.testing.assert_close(layer(x), base(x))  # lora_B starts at zero
    assert [name for name, p in layer.named_parameters() if p.requires_grad] == ["lora_A.default", "lora_B.default"]
    peft = pytest.importorskip("peft")
    with torch.no_grad():
        layer.lora_B["default"].normal_()
    model = peft.inject_adapter_in_model(
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["layer"]), nn.ModuleDict({"layer": nn.Linear(12, 10)})
    )
    peft_layer = model["layer"]
    with torch.no_grad():
        peft_layer.base_layer.load_state_dict(base.state_dict())
        peft_layer.lora_A["default"].weight.copy_(layer.lora_A["default"])
        peft_layer.lora_B["default"].weight.copy_(layer.lora_B["default"])
    torch.testing.assert_close(layer(x), peft_layer(x))


def test_dropout_is_a_mask_drawn_outside_the_op():
    torch.manual_seed(1)
    layer = single_adapter(nn.Linear(8, 8), r=2, dropout=0.5)
    with torch.no_grad():
        layer.lora_B["default"].normal_()
    x = torch.randn(64, 8)
    assert not torch.equal(layer.train()(x), layer(x))  # training: a new mask each call
    assert torch.equal(layer.eval()(x), layer(x))  # evaluation: no dropout


# --- dropout_mask ---------------------------------------------------------------------------


def test_dropout_mask_statistics_and_independence_of_threads():
    x = torch.empty(64, 1000, 7)
    mask = ops.dropout_mask(x, 0.05, 7)
    assert mask.shape == x.shape
    dropped = 1 - mask.double().mean().item()
    assert abs(dropped - dropout_probability(0.05)) < 4 * math.sqrt(0.05 * 0.95 / mask.numel())
    # neighbouring elements (one hash word, 4 lanes) and seeds are not correlated
    flat = mask.flatten().double()
    assert abs(torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1]) < 0.01
    assert not torch.equal(mask, ops.dropout_mask(x, 0.05, 8))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(mask, ops.dropout_mask(x, 0.05, 7))
    finally:
        torch.set_num_threads(threads)
    torch.library.opcheck(torch.ops.skelang.dropout_mask.default, (x, 0.05, 7))


def test_dropout_mask_errors_and_rounding():
    with pytest.raises(RuntimeError, match=r"p must be in \[0, 1\), got 1"):
        ops.dropout_mask(torch.empty(3), 1.0, 0)
    with pytest.raises(RuntimeError, match="seed must be non-negative"):
        ops.dropout_mask(torch.empty(3), 0.1, -1)
    assert dropout_probability(0.05) == 3277 / 65536 and dropout_probability(0.5) == 0.5


def test_lora_layer_dropout_follows_the_global_seed():
    layer = single_adapter(nn.Linear(8, 8), r=2, dropout=0.3).train()
    x = torch.randn(16, 8)
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    torch.testing.assert_close(layer(x), first, rtol=0, atol=0)
