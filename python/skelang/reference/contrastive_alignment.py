"""Pure-PyTorch reference of skelang.ops.contrastive_alignment_loss: the whole logits matrix and
cross-entropy."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def contrastive_alignment_loss(skeleton: Tensor, text: Tensor, labels: Tensor, log_scale: Tensor) -> Tensor:
    logits = log_scale.exp() * skeleton @ text.T  # (N, M)
    return F.cross_entropy(logits, labels)
