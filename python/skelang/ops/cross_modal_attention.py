"""cross_modal_attention: SSF's (HocSLM) skeleton steps attending to text tokens. See
csrc/fusion/cross_modal_attention.cpp (ATen's fused attention; CompositeImplicitAutograd, so
autograd, the meta tensors and torch.compile go through the same C++ and its checks).

    cross_modal_attention(query (N, Lq, E), key, value (B, Lk, E), key_mask (B, Lk) | None, heads)
        multi-head attention of the query steps over the tokens, B in {1, N}
"""

from __future__ import annotations

import torch
from torch import Tensor


def cross_modal_attention(
    query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None = None, heads: int = 1
) -> Tensor:
    """Each query step attends over the key/value tokens (padding where key_mask is False)."""
    return torch.ops.skelang.cross_modal_attention.default(query, key, value, key_mask, heads)
