"""torch.autocast for skelang's ops: under autocast (CPU or CUDA) an op's floating inputs are
cast and the op runs with autocast off, as ATen's own ops do.

    lower precision (the autocast dtype: bfloat16 on CPU, float16 or bfloat16 on CUDA): the ops
        whose cost is products (graph_aggregate, composite_aggregate, axis_attention(_with_probs),
        multiscale_temporal_conv, cross_modal_attention, lora_linear); they accumulate in
        float32 either way.
    float32: the ops whose result is a comparison or a sum that precision decides
        (nearest_code, code_statistics, contrastive_alignment_loss).
ema_codebook_update_ is not cast: it updates its codebook in place, in the codebook's dtype;
dropout_mask computes no floating result. An op's explicit backward op is not called under
autocast (autograd runs outside it).
"""

from __future__ import annotations

import torch

LOWER_PRECISION = (
    "graph_aggregate",
    "graph_aggregate_grad_topology",
    "composite_aggregate",
    "axis_attention",
    "axis_attention_with_probs",
    "multiscale_temporal_conv",
    "cross_modal_attention",
    "lora_linear",
)
FLOAT32 = ("nearest_code", "code_statistics", "contrastive_alignment_loss")

_library = torch.library.Library("skelang", "IMPL")


def _register(name: str, device_type: str, lower: bool) -> None:
    key_name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    key = getattr(torch._C.DispatchKey, key_name)
    op = getattr(torch.ops.skelang, name).default

    def cast(value, dtype):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.device.type == device_type:
            return value.to(dtype)
        return value

    def kernel(_keyset, *args):
        dtype = torch.get_autocast_dtype(device_type) if lower else torch.float32
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return op(*(cast(arg, dtype) for arg in args))

    _library.impl(name, kernel, key_name, with_keyset=True)


for _device in ("cpu", "cuda"):
    for _name in LOWER_PRECISION:
        _register(_name, _device, lower=True)
    for _name in FLOAT32:
        _register(_name, _device, lower=False)
