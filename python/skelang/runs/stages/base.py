"""The Stage interface: what one kind of run (encoder, SSF, VST, language model) contributes
to the one training loop of skelang.runs.loop.

A stage is made from a resolved config (and the run folder it writes). The loop calls, in
order: build(), trained_modules() under data-parallel training (skelang.runs.distributed),
parameter_groups(), then per epoch set_epoch() and training_step() on each of
batches(), evaluate() on the evaluation schedule, state_dict() for each checkpoint; at the
end finish(). To resume, load_state_dict() gets a checkpoint back. Under data-parallel
training every rank makes its stage; only rank 0 (`ranks.is_main`) writes into the run folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from skelang.runs.directory import RunDirectory
from skelang.runs.distributed import SINGLE, Ranks
from skelang.threads import ThreadBudget


def native_bfloat16(device: torch.device) -> bool | None:
    """Whether `device` computes bfloat16 natively: a CUDA GPU that does (compute capability
    8.0 or more), an x86 CPU with AVX-512 BF16 or AMX. None where torch cannot tell (other
    CPUs). Without it torch.autocast emulates bfloat16 through float32, slower than float32
    itself: CTR-GCN's NW-UCLA training step (N=16) took 4.7 s in bf16 against 1.0 s in fp32 on
    a 2-core AVX2 AMD EPYC, and ran 1.24x faster in bf16 on one with AVX-512 BF16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu" or not torch.backends.cpu.get_cpu_capability().startswith("AVX"):
        return None
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks) if all(checks) else None


@dataclasses.dataclass
class StepOutput:
    """One training step: the loss to minimise (a scalar tensor), the batch size, how many
    samples the model classified right (None when the stage does not classify in training),
    and named loss parts to log (floats, averaged over the epoch)."""

    loss: torch.Tensor
    size: int
    correct: int | None = None
    parts: dict[str, float] = dataclasses.field(default_factory=dict)


# train.precision and lm.model_dtype: fp32 | bf16 | fp16
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Stage:
    """One kind of training run. Subclasses set `name` (the config's `stage`), `section` (the
    config section it reads, None for the encoder stage) and `log_metrics` (evaluation
    metrics copied into each log line besides test_top1)."""

    name: ClassVar[str]
    section: ClassVar[str | None] = None
    log_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: dict,
        run: RunDirectory,
        device: torch.device,
        progress: bool = True,
        budget: ThreadBudget | None = None,
        ranks: Ranks = SINGLE,
    ):
        self.config, self.run, self.device, self.progress = config, run, device, progress
        self.budget = budget or ThreadBudget(config["train"]["threads"], config["data"]["num_workers"])
        self.ranks = ranks  # data-parallel training: batches() yields this rank's part of each batch

    def autocast(self):
        """The context of the run's train.precision: torch.autocast in bfloat16 or float16, or
        nothing for fp32."""
        precision = self.config["train"]["precision"]
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("train.precision: fp16 needs a CUDA device; on the CPU use bf16")
        dtype = PRECISION_DTYPES[precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)

    @property
    def num_workers(self) -> int:
        """DataLoader workers: data.num_workers, or the thread budget's choice."""
        return self.budget.workers

    def build(self) -> None:
        """Reads the data and builds the model."""
        raise NotImplementedError

    def trained_modules(self) -> list[torch.nn.Module]:
        """The modules holding the trained weights (what data-parallel training wraps)."""
        return [self.model]

    def parameter_groups(self) -> list[dict]:
        """Optimizer parameter groups; a group's `lr_scale` multiplies the scheduled rate."""
        raise NotImplementedError

    def num_batches(self) -> int:
        """Training batches per epoch."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called at the start of each (0-based) epoch, before batches()."""

    def batches(self, epoch: int) -> Iterable[Any]:
        """The epoch's training batches, in the order fixed by (seed, epoch); under
        data-parallel training this rank's part of each (never empty), as many batches on
        every rank."""
        raise NotImplementedError

    def training_step(self, batch) -> StepOutput:
        raise NotImplementedError

    def evaluate(self, final: bool) -> dict:
        """Test metrics (`top1` at least); `final` after the last epoch."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What a checkpoint holds of the stage (the loop adds optimizer, epoch, RNG states)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def class_names(self, count: int) -> list[str] | None:
        """The names of the `count` classes of the run's data (for figures), or None."""
        return None

    def finish(self, metrics: dict) -> dict:
        """End-of-run work (files beside the checkpoint); returns metrics to add."""
        return {}

    def finished_state(self) -> dict:
        """What finish() fitted that inference needs, for the checkpoint beside the training
        state; never read on resume, so an extended run trains on as a straight one would."""
        return {}

    def load_finished_state(self, checkpoint: dict) -> None:
        """Applies finished_state()'s entries of a finished run's checkpoint (inference)."""

    def parameters_count(self) -> int:
        raise NotImplementedError
