"""An exponential moving average (EMA) of a stage's trained weights, for `train.ema_decay`.

An exponential-window variant of Polyak-Ruppert averaging (Polyak & Juditsky 1992 average
the iterates uniformly), as tf.train.ExponentialMovingAverage and timm's model EMA
(ModelEmaV2) keep it: after every optimizer step that changed the weights, each averaged
tensor a moves towards the trained tensor w,

    a <- d_n a + (1 - d_n) w,    d_n = min(decay, (1 + n) / (10 + n)),

n the number of updates so far: the warm-up of TensorFlow's `num_updates` (which callers
usually pass as the already incremented global step, so TensorFlow's first d is 2/11, here
1/10), so that the first updates are not dominated by the initial weights. timm's ModelEmaV2
has no warm-up. The update itself is torch's swa_utils.get_ema_multi_avg_fn. What is
averaged: every parameter that requires a gradient and the batch norms' running mean and
variance. timm and torch's AveragedModel(use_buffers=True) average every buffer; here the
other buffers (counters, VST's codebook and its statistics, which follow the trained
features) stay the trained model's. The averaged weights are what a run evaluates and its
checkpoint's weights (so `skelang eval`, `predict`, ensembles and later stages read the
evaluated model); the trained weights travel beside them for resume.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn

WARMUP_OFFSET = 10  # d_n = (1 + n) / (10 + n) until it reaches the decay


def _averaged_tensors(modules: list[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The tensors an average covers, by `<module index>.<name>`: trained parameters and batch
    norms' running mean and variance."""
    tensors = {}
    for index, module in enumerate(modules):
        for name, parameter in module.named_parameters():
            if parameter.requires_grad:
                tensors[f"{index}.{name}"] = parameter
        for prefix, child in module.named_modules():
            if isinstance(child, torch.nn.modules.batchnorm._NormBase) and child.track_running_stats:
                for stat in ("running_mean", "running_var"):  # present whenever track_running_stats
                    tensors[f"{index}.{prefix}.{stat}" if prefix else f"{index}.{stat}"] = getattr(child, stat)
    return tensors


class WeightAverage:
    """The EMA of the trained weights of `modules` (a stage's trained_modules()), starting from
    their current values. `decay` in (0, 1): the averaging horizon is about 1 / (1 - decay)
    steps (0.998: 500)."""

    def __init__(self, modules: list[torch.nn.Module], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay: expected a decay in (0, 1) to average the weights, got {decay}")
        self.decay = decay
        self.updates = 0
        self.trained = _averaged_tensors(modules)
        self.average = {name: tensor.detach().clone() for name, tensor in self.trained.items()}
        self.kept = None  # the trained weights while applied() holds the averaged ones

    def current_decay(self) -> float:
        """d_n of the next update."""
        return min(self.decay, (1 + self.updates) / (WARMUP_OFFSET + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average (after an optimizer step)."""
        if self.trained:
            get_ema_multi_avg_fn(self.current_decay())(
                list(self.average.values()), [tensor.detach() for tensor in self.trained.values()], self.updates
            )
        self.updates += 1

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The modules hold the averaged weights inside the context, their trained ones again
        after it."""
        if self.kept is not None:
            raise RuntimeError("WeightAverage.applied() is already active (it does not nest)")
        self.kept = self.trained_state()
        self.load_into_modules(self.average)
        try:
            yield
        finally:
            self.load_into_modules(self.kept)
            self.kept = None

    def apply(self) -> None:
        """The modules keep the averaged weights from now on (the end of training)."""
        self.load_into_modules(self.average)

    def load_into_modules(self, values: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, tensor in self.trained.items():
                tensor.copy_(values[name])

    def trained_state(self) -> dict[str, torch.Tensor]:
        """Copies of the trained weights (also inside applied(), where the copies it took are
        returned: nothing writes into them, applied() only reads them back at its end)."""
        if self.kept is not None:
            return dict(self.kept)
        return {name: tensor.detach().clone() for name, tensor in self.trained.items()}

    def state_dict(self) -> dict:
        """What a checkpoint keeps beside the averaged weights: the update count and the
        trained weights (the decay is the run's config)."""
        return {"updates": self.updates, "trained": self.trained_state()}

    def load_state_dict(self, state: dict) -> None:
        """Resumes from a checkpoint whose weights (already loaded into the modules, and so
        into this average when it was made) are the averaged ones: the modules get the trained
        weights back."""
        saved = state["trained"]
        differ = sorted(set(self.trained) ^ set(saved)) or [
            name for name, tensor in self.trained.items() if saved[name].shape != tensor.shape
        ]
        if differ:
            raise ValueError(
                f"the checkpoint's weight average does not match the model's averaged weights: "
                f"{', '.join(differ[:5])}" + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
            )
        self.updates = state["updates"]
        self.load_into_modules(saved)
