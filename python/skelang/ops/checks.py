"""The input checks of csrc/common/checks.h for the fake (meta) kernels: the same conditions
and the same messages, so a bad call fails alike on real and on meta tensors (and under
torch.compile)."""

from __future__ import annotations

import torch
from torch import Tensor

# c10's names of the dtypes, as the C++ checks print them
_SCALAR_TYPE = {
    torch.float32: "Float",
    torch.float64: "Double",
    torch.bfloat16: "BFloat16",
    torch.float16: "Half",
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.bool: "Bool",
}
FLOATING = (torch.float32, torch.float64, torch.bfloat16)


def scalar_type(dtype: torch.dtype) -> str:
    return _SCALAR_TYPE.get(dtype, str(dtype))


def sizes(t: Tensor) -> str:
    return "[" + ", ".join(str(n) for n in t.shape) + "]"


def check(condition: bool, op: str, message) -> None:
    """torch._check with "op: message" (message may be a callable giving the text)."""
    torch._check(condition, lambda: f"{op}: {message() if callable(message) else message}")


def check_rank(op: str, name: str, t: Tensor, rank: int, layout: str) -> None:
    check(
        t.dim() == rank,
        op,
        lambda: f"{name} must be a {rank}-D tensor {layout}, got a {t.dim()}-D tensor of shape {sizes(t)}",
    )


def check_floating(op: str, name: str, t: Tensor) -> None:
    """float32, float64 or bfloat16 anywhere; float16 too on CUDA and meta tensors."""
    allowed = t.dtype in FLOATING or (t.dtype == torch.float16 and t.device.type in ("cuda", "meta"))
    check(
        allowed,
        op,
        lambda: f"{name} must be float32, float64 or bfloat16 (float16 on CUDA), got {scalar_type(t.dtype)}",
    )


def check_same_dtype(op: str, name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    check(
        a.dtype == b.dtype,
        op,
        lambda: (
            f"{name_a} and {name_b} must have the same dtype, got {scalar_type(a.dtype)} and {scalar_type(b.dtype)}"
        ),
    )


def check_same_device(op: str, name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    check(
        a.device == b.device,
        op,
        lambda: f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}",
    )


def check_same_dtype_and_device(op: str, name: str, t: Tensor, others: dict[str, Tensor]) -> None:
    for other_name, other in others.items():
        check_same_dtype(op, name, t, other_name, other)
        check_same_device(op, name, t, other_name, other)


def check_broadcastable(op: str, what: str, size: int, full: int) -> None:
    check(size == 1 or size == full, op, lambda: f"{what} must be 1 or {full}, got {size}")
