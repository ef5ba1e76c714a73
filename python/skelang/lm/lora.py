"""LoRA layers on skelang.ops.lora_linear (Hu et al., 2021, "LoRA: Low-Rank Adaptation").

A frozen base layer W (out, in) gets a trainable low-rank update B A, with A (r, in) and
B (out, r):  y = x W^T + b + scaling * (dropout(x) A^T) B^T,  scaling = alpha / r, or
alpha / sqrt(r) with rsLoRA (Kalajdzievski, 2023). Initialised as PEFT does (A Kaiming-uniform
with a = sqrt(5), B zeros), so a layer starts as its base layer. In training, dropout on the
LoRA branch's input is a mask drawn here and passed to the fused op.

- LoRALayer: several named adapters on an nn.Linear; one adapter active at a time, merge and
  unmerge into the base weight.
- Conv1DLoRALayer: the same on transformers' GPT-2 Conv1D, whose weight is stored (in, out)
  (PEFT's fan_in_fan_out).
lora_layer_class(base) chooses the class by the base layer's type; skelang.lm.adapters
injects them into Hugging Face models (LoRAModel).
"""

from __future__ import annotations

import math
from types import ModuleType

import torch
from torch import Tensor, nn

import skelang.ops
import skelang.reference

try:
    from transformers.pytorch_utils import Conv1D
except ImportError:  # transformers is optional: without it only nn.Linear can be wrapped
    Conv1D = None

BACKENDS = {"cpp": skelang.ops, "reference": skelang.reference}


def lora_backend(backend: str) -> ModuleType:
    """The module providing lora_linear: "cpp" (the fused op) or "reference" (pure PyTorch)."""
    if backend not in BACKENDS:
        raise ValueError(f"LoRA backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]


def check_lora_hyperparameters(r: int, alpha: float, dropout: float) -> None:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"LoRA rank must be positive, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"LoRA alpha must be a positive number, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")


def lora_scaling(r: int, alpha: float, rslora: bool = False) -> float:
    """alpha / r, or alpha / sqrt(r) with rsLoRA."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def init_lora_weights(r: int, in_features: int, out_features: int, like: Tensor) -> tuple[nn.Parameter, nn.Parameter]:
    """PEFT's default init: A (r, in) Kaiming-uniform with a = sqrt(5), B (out, r) zeros, on
    the device of `like` (the base weight), in its dtype or float32 where that is wider: an
    adapter of a bfloat16 or float16 base trains in float32 and is cast to the base's dtype in
    the forward pass (PEFT's autocast_adapter_dtype)."""
    factory = {"dtype": torch.promote_types(like.dtype, torch.float32), "device": like.device}
    lora_A = nn.Parameter(torch.empty(r, in_features, **factory))
    lora_B = nn.Parameter(torch.zeros(out_features, r, **factory))
    nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5))
    return lora_A, lora_B


def dropout_mask(x: Tensor, p: float, backend: str) -> Tensor | None:
    """A bool dropout mask of x's shape (True = kept), or None when p is 0. Backend "cpp":
    skelang.ops.dropout_mask (a counter-based hash, ~5x faster than torch.rand here) with a
    seed drawn from torch's default generator, so torch.manual_seed and saved RNG states
    reproduce it; "reference": torch.rand_like(x) >= p, as plain PyTorch draws it. Both drop
    with p rounded to a multiple of 1/65536 (`dropout_probability`). The 1 / (1 - p) of
    inverted dropout goes into the op's scaling (`dropout_scaling`), so backward keeps one
    byte per element, not a float mask."""
    if p == 0:
        return None
    if backend == "cpp":
        return skelang.ops.dropout_mask(x, p, int(torch.randint(0, 2**62, ())))
    return torch.rand_like(x) >= dropout_probability(p)


def dropout_probability(p: float) -> float:
    """The drop probability dropout_mask draws with: p rounded to a multiple of 1/65536."""
    return math.floor(p * 65536 + 0.5) / 65536


def dropout_scaling(scaling: float, p: float, mask: Tensor | None) -> float:
    """The op's scaling with a bool mask: scaling / (1 - dropout_probability(p)) (inverted dropout)."""
    return scaling if mask is None else scaling / (1 - dropout_probability(p))


def is_lora_base(module: nn.Module) -> bool:
    """Whether a LoRALayer can wrap `module`: an nn.Linear or transformers' Conv1D."""
    return isinstance(module, nn.Linear) or (Conv1D is not None and isinstance(module, Conv1D))


class LoRALayer(nn.Module):
    """A frozen nn.Linear (`base_layer`) with named LoRA adapters.

    Per adapter name: lora_A[name] (r, in), lora_B[name] (out, r), r[name], lora_alpha[name],
    scaling[name], lora_dropout[name]. The forward pass uses `active_adapter`, or only the base
    layer when `disabled`, when an adapter is merged into the base weight, or when this layer
    has no adapter of the active name. `module_name` (the qualified name in the model, set by
    inject_lora) is only used in error messages.
    """

    base_type: type = nn.Linear
    fan_in_fan_out = False  # the base weight is (out, in)

    def __init__(self, base_layer: nn.Module, backend: str = "cpp", module_name: str = ""):
        super().__init__()
        if not isinstance(base_layer, self.base_type):
            where = f" {module_name!r}" if module_name else ""
            raise TypeError(
                f"{type(self).__name__}{where} wraps a {self.base_type.__name__}, got {type(base_layer).__name__}"
            )
        self.base_layer = base_layer.requires_grad_(False)
        self.module_name = module_name
        self.backend = backend
        self.ops = lora_backend(backend)
        weight = base_layer.weight
        self.out_features, self.in_features = weight.shape[::-1] if self.fan_in_fan_out else weight.shape
        self.lora_A, self.lora_B = nn.ParameterDict(), nn.ParameterDict()
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.lora_dropout: dict[str, float] = {}
        self.active_adapter: str | None = None
        self.disabled = False
        self.merged_adapter: str | None = None

    @property
    def weight(self) -> Tensor:
        """The base layer's weight, in its own layout ((in, out) for Conv1D), as PEFT exposes it."""
        return self.base_layer.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base_layer.bias

    def _where(self) -> str:
        return f"LoRA layer {self.module_name!r}" if self.module_name else "LoRA layer"

    def add_adapter(
        self, adapter_name: str, r: int = 8, alpha: float = 16.0, dropout: float = 0.0, rslora: bool = False
    ) -> None:
        """Add a new adapter (B = 0, so the output does not change); it becomes active when
        this layer has no active adapter yet."""
        if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
            raise ValueError(
                f"{self._where()}: adapter name must be a non-empty string without '.', got {adapter_name!r}"
            )
        if adapter_name in self.lora_A:
            raise ValueError(f"{self._where()} already has an adapter named {adapter_name!r}")
        check_lora_hyperparameters(r, alpha, dropout)
        self.lora_A[adapter_name], self.lora_B[adapter_name] = init_lora_weights(
            r, self.in_features, self.out_features, self.base_layer.weight
        )
        self.r[adapter_name], self.lora_alpha[adapter_name] = r, float(alpha)
        self.scaling[adapter_name] = lora_scaling(r, alpha, rslora)
        self.lora_dropout[adapter_name] = float(dropout)
        if self.active_adapter is None:
            self.active_adapter = adapter_name

    def _adapter(self, adapter_name: str | None) -> str:
        name = self.active_adapter if adapter_name is None else adapter_name
        if name not in self.lora_A:
            raise ValueError(f"{self._where()} has no adapter named {name!r}; it has {list(self.lora_A)}")
        return name

    def delta_weight(self, adapter_name: str | None = None) -> Tensor:
        """scaling * B A in the base weight's layout: (out, in), or (in, out) for Conv1D;
        computed in at least float32, returned in the base weight's dtype."""
        name = self._adapter(adapter_name)
        weight = self.base_layer.weight
        dtype = torch.promote_types(weight.dtype, torch.float32)
        delta = (self.lora_B[name].to(dtype) @ self.lora_A[name].to(dtype)) * self.scaling[name]  # (out, in)
        return (delta.t() if self.fan_in_fan_out else delta).to(weight.dtype)

    @torch.no_grad()
    def merge(self, adapter_name: str | None = None, safe_merge: bool = True) -> None:
        """Add scaling * B A of an adapter (default: the active one) into the base weight.
        With safe_merge the merged weight is computed in a copy first and a non-finite result
        raises ValueError, leaving the base weight unchanged."""
        if self.merged_adapter is not None:
            raise ValueError(f"{self._where()}: adapter {self.merged_adapter!r} is already merged; unmerge() it first")
        name = self._adapter(adapter_name)
        weight = self.base_layer.weight
        delta = self.delta_weight(name)
        if safe_merge:
            merged = weight + delta
            if not torch.isfinite(merged).all():
                raise ValueError(
                    f"{self._where()}: merging adapter {name!r} gives non-finite weights "
                    "(NaN or inf in lora_A/lora_B?); the base weight is left unchanged"
                )
            weight.copy_(merged)
        else:
            weight.add_(delta)
        self.merged_adapter = name

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the merged adapter's scaling * B A from the base weight again."""
        if self.merged_adapter is None:
            raise ValueError(f"{self._where()}: no adapter is merged, nothing to unmerge")
        self.base_layer.weight.sub_(self.delta_weight(self.merged_adapter))
        self.merged_adapter = None

    def forward(self, x: Tensor) -> Tensor:
        if self.merged_adapter is not None:
            if self.disabled:
                raise RuntimeError(
                    f"{self._where()}: adapters are disabled but adapter "
                    f"{self.merged_adapter!r} is merged into the base weight; unmerge it first"
                )
            return self.base_layer(x)
        name = self.active_adapter
        if self.disabled or name not in self.lora_A:
            return self.base_layer(x)
        weight = self.base_layer.weight
        weight = weight.t() if self.fan_in_fan_out else weight  # (out, in); a view for Conv1D
        mask = dropout_mask(x, self.lora_dropout[name], self.backend) if self.training else None
        return self.ops.lora_linear(
            x,
            weight,
            self.base_layer.bias,
            self.lora_A[name].to(weight.dtype),  # float32 adapters of a half-precision base
            self.lora_B[name].to(weight.dtype),
            dropout_scaling(self.scaling[name], self.lora_dropout[name], mask),
            mask,
        )

    def extra_repr(self) -> str:
        adapters = ", ".join(f"{name}: r={self.r[name]}, scaling={self.scaling[name]:g}" for name in self.lora_A)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"fan_in_fan_out={self.fan_in_fan_out}, active={self.active_adapter!r}, adapters={{{adapters}}}"
        )


if Conv1D is not None:

    class Conv1DLoRALayer(LoRALayer):
        """LoRALayer on transformers' GPT-2 Conv1D: weight (in, out), y = x W + b (PEFT's
        fan_in_fan_out)."""

        base_type = Conv1D
        fan_in_fan_out = True


def lora_layer_class(base_layer: nn.Module) -> type[LoRALayer]:
    """The LoRA layer class for a base layer's type (nn.Linear, transformers' Conv1D)."""
    if Conv1D is not None and isinstance(base_layer, Conv1D):
        return Conv1DLoRALayer
    if isinstance(base_layer, nn.Linear):
        return LoRALayer
    raise TypeError(f"LoRA wraps an nn.Linear or transformers' Conv1D, got {type(base_layer).__name__}")
