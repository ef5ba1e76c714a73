"""Data-parallel training under torchrun: the process group, the ranks' share of each batch,
batch normalisation over the global batch on the CPU, and what rank 0 alone does.

    torchrun --nproc_per_node 2 -m skelang train --config C --out RUN

Every stage trains this way (skelang.runs.loop): a process group from torchrun's environment
(NCCL on CUDA, gloo on the CPU; one GPU per rank, cuda:LOCAL_RANK), the stage's trained
modules wrapped in DistributedDataParallel, each global batch of train.batch_size split into
the ranks' contiguous parts (skelang.data.dataset.shard), each rank's loss weighted by its
share of the batch so that the averaged gradients are those of the global batch, batch norms
computed over the global batch (torch's SyncBatchNorm on CUDA; on the CPU, where torch has
none, SyncBatchNorm below), and rank 0 alone writing the run folder. Every rank evaluates the
whole test set (the weights are the same on every rank), so no rank waits for another
longer than a training step. The data order, the augmentations and the schedule depend on
(seed, epoch) alone and the checkpoint holds the unwrapped weights: a run resumes with any
number of processes. The global batch's gradient is exact for losses that are means over
samples (the encoder, SSF and VST stages); the language model's loss is a mean over answer
tokens, whose count differs between samples, so under DDP its weighting by samples is an
approximation. VST's codebook statistics are all-reduced; SSF's contrastive loss compares
each rank's samples among themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as collectives
from torch import nn


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's rank among `world` processes (world 1: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run folder and shows progress."""
        return self.rank == 0


SINGLE = Ranks()


def is_main_process() -> bool:
    """Whether this process is rank 0 of torchrun's (or not under torchrun): the one that
    prints and writes what every rank computes alike."""
    return os.environ.get("RANK", "0") == "0"


def join_process_group(device: str) -> tuple[Ranks, bool]:
    """(the Ranks of this process, whether this call joined the process group). Under
    torchrun (WORLD_SIZE > 1 in the environment, with RANK and LOCAL_RANK) it joins the
    default process group if no one has: NCCL when `device` is not "cpu" and CUDA is there
    (this rank's GPU: cuda:LOCAL_RANK), else gloo. Outside torchrun: (SINGLE, False)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return SINGLE, False
        ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError) as error:
        raise ValueError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers set by torchrun: {error}") from None
    if dist.is_initialized():
        return ranks, False
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(ranks.local_rank)
    # every rank evaluates, so a collective waits at most about a training step for another rank
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return ranks, True


def leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def select_device(name: str, ranks: Ranks = SINGLE) -> torch.device:
    """The training device of train.device `name` ("auto", "cpu" or "cuda") for this rank."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is cuda but no CUDA device is available")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", ranks.local_rank) if ranks.distributed else torch.device("cuda")


def broadcast_object(value: Any, ranks: Ranks) -> Any:
    """Rank 0's `value` on every rank."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float], ranks: Ranks, device: torch.device) -> list[float]:
    """Element-wise sums of `values` over the ranks (float64)."""
    if not ranks.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def differentiable_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over the ranks, with the gradient summed back to every rank:
    torch's functional collectives where they have a backward (torch 2.13 on), else
    torch.distributed.nn (their predecessor, which older torch differentiates)."""
    if hasattr(collectives, "all_reduce_backward"):
        return collectives.all_reduce(tensor, "sum", dist.group.WORLD)
    import torch.distributed.nn.functional as legacy

    return legacy.all_reduce(tensor)


def data_parallel_options() -> dict:
    """DistributedDataParallel's keyword that keeps each rank's buffers (no copy from rank 0 at
    every forward): forward_sync_buffers from torch 2.13, broadcast_buffers before."""
    import inspect

    parameters = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation whose training statistics are those of the global batch of every
    rank's part (two all-reduces: the sums, then the squared deviations from the global
    mean; gradients flow through both), for CPU process groups (torch.nn.SyncBatchNorm runs
    on GPUs only). Input (N, C, ...); in evaluation, or outside a process group, it is
    BatchNorm. The running variance is unbiased over the global batch, as BatchNorm's."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"SyncBatchNorm expects (N, C, ...) input, got {input.dim()} dimensions")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        count = torch.tensor([x.numel() / max(x.shape[1], 1)], dtype=x.dtype, device=x.device)
        totals = differentiable_all_reduce(torch.cat([x.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = x - mean.view(shape)
        variance = differentiable_all_reduce(centred.square().sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = variance * n / (n - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        y = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def convert_batch_norms(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with every BatchNorm made to normalise over the global batch: torch's
    SyncBatchNorm on CUDA, SyncBatchNorm above on the CPU. The parameters and buffers stay
    the same tensors (an optimizer made before still holds them)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        converted = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_batch_norms(child, device))
    return module


# ---------------------------------------------------------------------------------------
# Fully sharded data parallelism (train.parallel: fsdp, the language-model stage)


def shard_fully(module: nn.Module, groups: list[dict], device: torch.device) -> list[dict]:
    """Shards `module` (a stage's training step with every trained module) over the ranks with
    FSDP2 (torch.distributed.fsdp.fully_shard): one unit per transformer block (the classes a
    Hugging Face model names in `_no_split_modules`, as accelerate's FSDP plugin wraps them),
    and the rest (embeddings, head, LoRA's other weights, projector, encoder token) in the root unit. Each
    rank keeps 1/world of every weight, gradient and optimizer state on `device` (a module
    still on the CPU moves there shard by shard); a unit's weights are gathered for its
    forward and backward and freed after. `groups` (the stage's optimizer parameter groups)
    get the sharded parameters in place of the originals, which fully_shard replaces; they
    are changed in place (the stage holds them) and returned."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))

    names = {id(parameter): name for name, parameter in module.named_parameters()}
    named_groups = [[names[id(parameter)] for parameter in group["params"]] for group in groups]
    blocks = {block for child in module.modules() for block in (getattr(child, "_no_split_modules", None) or [])}
    for child in list(module.modules()):
        if child is not module and type(child).__name__ in blocks:
            fully_shard(child, mesh=mesh)
    fully_shard(module, mesh=mesh)
    sharded = dict(module.named_parameters())
    for group, group_names in zip(groups, named_groups):
        group["params"] = [sharded[name] for name in group_names]
    return groups


def _units(module: nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [child for child in module.modules() if isinstance(child, FSDPModule)]


@contextlib.contextmanager
def full_weights(module: nn.Module | None):
    """Within: every weight of a fully sharded `module` gathered whole on every rank (a
    collective: every rank enters), so the stage evaluates, explains and exports as it does
    unsharded, and no rank waits on another whose generation took more steps; after: sharded
    again. Nothing for a module that is not sharded (or None). Inside, a state_dict() of a
    unit would reshard it on the calling rank alone: gather states with whole_tensors."""
    units = _units(module) if module is not None else []
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)  # the stage's forwards keep them whole
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            # fully_shard's own setting: blocks reshard after their forward, the root keeps its
            # weights for the backward that follows
            unit.set_reshard_after_forward(unit is not module, recurse=False)


def whole_tensors(value: Any) -> Any:
    """`value` (a stage's state: nested dicts, lists, tensors) with every DTensor (a sharded
    weight, as a fully sharded module's state_dict gives it) gathered whole. A collective when
    there are DTensors: every rank calls it with the same structure."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        return value.full_tensor()
    if isinstance(value, dict):
        return {key: whole_tensors(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(whole_tensors(item) for item in value)
    return value


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state of a fully sharded `module` whole, in torch's own layout
    (parameters numbered in the order of the optimizer's groups), as an unsharded run saves
    it, so that a checkpoint resumes with any number of processes, sharded or not. A
    collective: every rank calls it; rank 0 receives the state (on the CPU), the others {}."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    state = get_optimizer_state_dict(
        module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if not state:
        return {}
    number, groups = {}, []
    for group in state["param_groups"]:
        groups.append({**group, "params": [number.setdefault(name, len(number)) for name in group["params"]]})
    return {"state": {number[name]: value for name, value in state["state"].items()}, "param_groups": groups}


def load_full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Loads an optimizer state in torch's own layout (a checkpoint's, whole on every rank)
    into the optimizer of a fully sharded `module`: each rank keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    saved_sizes = [len(group["params"]) for group in state["param_groups"]]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    if saved_sizes != sizes:
        raise ValueError(
            f"the checkpoint's optimizer has parameter groups of sizes {saved_sizes}, this run's {sizes}: "
            "not a checkpoint of this model"
        )
    names = {id(parameter): name for name, parameter in module.named_parameters()}
    ordered = [names[id(parameter)] for group in optimizer.param_groups for parameter in group["params"]]
    groups, start = [], 0
    for saved, group in zip(state["param_groups"], optimizer.param_groups):
        groups.append({**saved, "params": ordered[start : start + len(group["params"])]})
        start += len(group["params"])
    named = {"state": {ordered[number]: value for number, value in state["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(module, optimizer, named, options=StateDictOptions(full_state_dict=True))
