"""The one training loop: any Stage, epochs with a progress bar, the learning-rate schedule,
evaluation, logs, atomic checkpoints, bit-exact resume and the final metrics; in one process
or data-parallel under torchrun (skelang.runs.distributed).

The learning rate is a function of the epoch alone (learning_rate), so the epoch is the whole
state of the schedule: warm-up is per epoch, as in CTR-GCN (epoch e < warmup_epochs runs at
lr * (e + 1) / warmup_epochs). With the data and its shuffling fixed by (seed, epoch) and the
RNG states in each checkpoint, a run resumed from its checkpoint ends with the same weights,
bit for bit, as one that never stopped.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from skelang.runs import distributed
from skelang.runs.averaging import WeightAverage
from skelang.runs.config import absolute_paths
from skelang.runs.directory import RunDirectory
from skelang.runs.distributed import Ranks
from skelang.runs.plots import CONFUSION, CURVES, plot_confusion, plot_curves
from skelang.runs.stages.base import Stage, StepOutput, native_bfloat16
from skelang.threads import ThreadBudget


def learning_rate(optim: dict, epochs: int, epoch: int) -> float:
    """The learning rate of (0-based) `epoch` in a run of `epochs` epochs."""
    warmup = optim["warmup_epochs"]
    if epoch < warmup:
        return optim["lr"] * (epoch + 1) / warmup
    if optim["schedule"] == "cosine":
        progress = (epoch - warmup) / max(1, epochs - warmup)
        return optim["lr"] * 0.5 * (1 + math.cos(math.pi * progress))
    return optim["lr"] * optim["gamma"] ** sum(epoch >= milestone for milestone in optim["milestones"])


def make_optimizer(groups: list, optim: dict) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW, as optim.optimizer says, over parameter groups (or
    a list of parameters)."""
    if optim["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=optim["lr"], weight_decay=optim["weight_decay"])
    return torch.optim.SGD(
        groups,
        lr=optim["lr"],
        momentum=optim["momentum"],
        nesterov=optim["nesterov"],
        weight_decay=optim["weight_decay"],
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict:
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, keys.tolist(), position, has_gauss, cached_gaussian],
        "python": random.getstate(),
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(states["python"])


def fit(stage_class: type[Stage], config: dict, run: RunDirectory, resume: bool = False, progress: bool = True) -> dict:
    """Trains a stage of a resolved `config` into `run` (see the module's documentation) and
    returns the final metrics; with `resume`, continues from the run's checkpoint (a finished
    run returns its metrics). Under torchrun every rank calls this; rank 0 holds and writes
    the run folder. Relative data and run paths are kept absolute in the run (absolute_paths)."""
    config = absolute_paths(config)
    ranks, joined = distributed.join_process_group(config["train"]["device"])
    try:
        with contextlib.ExitStack() as held:
            checkpoint, finished = _start(run, config, resume, ranks, held)
            if finished is not None:
                return finished
            seed_everything(config["seed"])
            with ThreadBudget(config["train"]["threads"], config["data"]["num_workers"]) as budget:
                device = distributed.select_device(config["train"]["device"], ranks)
                stage = stage_class(config, run, device, progress and ranks.is_main, budget, ranks)
                return _train(stage, checkpoint)
    finally:
        if joined:
            distributed.leave_process_group()


def _start(
    run: RunDirectory, config: dict, resume: bool, ranks: Ranks, held: contextlib.ExitStack
) -> tuple[dict | None, dict | None]:
    """RunDirectory.start on rank 0 (holding the run's lock in `held`); the other ranks learn
    its outcome (an error is raised on every rank) and read the same checkpoint."""
    outcome = None
    if ranks.is_main:
        try:
            held.enter_context(run.lock())
            checkpoint, finished = run.start(config, resume)
            outcome = {"resume": checkpoint is not None, "finished": finished}
        except Exception as error:
            distributed.broadcast_object({"error": f"{type(error).__name__}: {error}"}, ranks)
            raise
    outcome = distributed.broadcast_object(outcome, ranks)
    if "error" in outcome:
        raise ValueError(f"rank 0 could not start the run: {outcome['error']}")
    if outcome["finished"] is not None:
        return None, outcome["finished"]
    if ranks.is_main:
        return checkpoint, None
    return (run.load_checkpoint() if outcome["resume"] else None), None


class _StepModule(torch.nn.Module):
    """A stage's trained modules as one module whose forward is a training step: what
    DistributedDataParallel wraps (it returns the loss first, for DDP to find the weights
    the step used)."""

    def __init__(self, stage: Stage):
        super().__init__()
        self.trained = torch.nn.ModuleList(stage.trained_modules())
        self.stage = [stage]  # not a submodule

    def forward(self, batch) -> tuple[torch.Tensor, StepOutput]:
        step = self.stage[0].training_step(batch)
        return step.loss, step


def _tensorboard(run: RunDirectory, start_epoch: int):
    """A SummaryWriter into run/tensorboard that drops the events of epochs after `start_epoch`
    (those a resumed run trains again)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError(
            "train.tensorboard is true but the tensorboard package is not installed: "
            "pip install tensorboard (or set train.tensorboard: false)"
        ) from None
    return SummaryWriter(str(run.file("tensorboard")), purge_step=start_epoch + 1)


def _write_figures(stage: Stage, metrics: dict) -> None:
    """curves.png of the run's log and confusion.png of its final evaluation."""
    run = stage.run
    plot_curves({run.path.name: run.read_log()}, run.file(CURVES))
    if "confusion_matrix" in metrics:
        matrix = metrics["confusion_matrix"]
        plot_confusion(matrix, stage.class_names(len(matrix)), run.file(CONFUSION), title=run.path.name)


def _data_parallel(stage: Stage) -> torch.nn.Module:
    """The DistributedDataParallel training step of a stage."""
    device_ids = [stage.device] if stage.device.type == "cuda" else None
    # static_graph: every step uses the same weights, which may leave some out (a stage's
    # ablated or separately fitted parts); DDP finds them in the first step. Buffers are not
    # copied from rank 0 at each step: batch norms are global, VST's codebook keeps itself
    # identical on every rank, and its ring of recent inputs is each rank's own.
    return torch.nn.parallel.DistributedDataParallel(
        _StepModule(stage), device_ids=device_ids, static_graph=True, **distributed.data_parallel_options()
    )


FP16_OVERFLOWS = 10  # non-finite fp16 losses in a row that end a training (fewer: the scaler skips them)


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite (a learning rate too high, an fp16 overflow)."""


def _train(stage: Stage, checkpoint: dict | None) -> dict:
    config, run, ranks = stage.config, stage.run, stage.ranks
    optim, options = config["optim"], config["train"]
    epochs = options["epochs"]
    if options["parallel"] == "fsdp" and (stage.name != "lm" or options["precision"] == "fp16"):
        raise ValueError(
            "train.parallel: fsdp shards the language-model stage (stage: lm) in bf16 or fp32; "
            f"this run is stage {stage.name} in {options['precision']} (use train.parallel: ddp)"
        )
    sharded = ranks.distributed and options["parallel"] == "fsdp"
    if sharded and options["ema_decay"] > 0:
        raise ValueError(
            "train.ema_decay averages whole weights; under train.parallel: fsdp they are sharded "
            "(use train.parallel: ddp, or train.ema_decay: 0)"
        )
    stage.build()
    if ranks.distributed:
        for module in stage.trained_modules():  # before the optimizer: the weights stay the same tensors
            distributed.convert_batch_norms(module, stage.device)
    stage.autocast()  # an impossible precision (fp16 on the CPU) fails before training
    bf16 = [
        f"{key}: bf16"
        for key, value in (
            ("train.precision", options["precision"]),
            ("lm.model_dtype", (config.get("lm") or {}).get("model_dtype")),
        )
        if value == "bf16"
    ]
    if bf16 and native_bfloat16(stage.device) is False and ranks.is_main:
        hardware = (
            "a GPU of compute capability below 8.0"
            if stage.device.type == "cuda"
            else f"a CPU without AVX-512 BF16 or AMX (this one: {torch.backends.cpu.get_cpu_capability()})"
        )
        print(
            f"skelang: {' and '.join(bf16)} on {hardware}: bfloat16 is emulated, several times slower "
            "than fp32 (fp32 is faster here)",
            file=sys.stderr,
            flush=True,
        )
    if checkpoint is not None:  # whole weights, before any sharding
        stage.load_state_dict(checkpoint)
    averager = None
    if options["ema_decay"] > 0:  # from the checkpoint's (averaged) weights, then the trained ones back
        averager = WeightAverage(stage.trained_modules(), options["ema_decay"])
        if checkpoint is not None:
            averager.load_state_dict(checkpoint["weight_average"])
    averaged = averager.applied if averager is not None else contextlib.nullcontext
    groups = stage.parameter_groups()
    parallel = None
    if sharded:  # before the optimizer: sharding replaces the parameters
        parallel = _StepModule(stage)
        groups = distributed.shard_fully(parallel, groups, stage.device)
    optimizer = make_optimizer(groups, optim)
    # fp16 gradients underflow without loss scaling; bf16 has float32's range
    scaler = torch.amp.GradScaler(stage.device.type) if options["precision"] == "fp16" else None
    start_epoch, wall_time, best, metrics = 0, 0.0, {"top1": None, "epoch": None}, None
    if checkpoint is not None:
        if sharded:
            distributed.load_full_optimizer_state(parallel, optimizer, checkpoint["optimizer"])
        else:
            optimizer.load_state_dict(checkpoint["optimizer"])
        if scaler is not None and "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, wall_time = checkpoint["epoch"], checkpoint["wall_time"]
        best = checkpoint.get("best", best)
        set_rng_states(checkpoint["rng"])
    if ranks.distributed and not sharded:
        parallel = _data_parallel(stage)
    whole = (lambda: distributed.full_weights(parallel)) if sharded else contextlib.nullcontext
    if ranks.is_main:
        run.rewind_log(start_epoch)
    events = _tensorboard(run, start_epoch) if options["tensorboard"] and ranks.is_main else None

    batches = stage.num_batches()
    if batches == 0:
        raise ValueError(f"no training batch: the training data is smaller than the {ranks.world} processes")
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    if options["deterministic"]:
        torch.use_deterministic_algorithms(True)
    bar = tqdm(
        total=epochs * batches,
        initial=start_epoch * batches,
        disable=not stage.progress,
        unit="batch",
        dynamic_ncols=True,
    )
    try:
        for epoch in range(start_epoch, epochs):
            started = time.perf_counter()
            lr = learning_rate(optim, epochs, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            if ranks.rank > 0:  # rank 0's random state is the checkpoint's; the others' follow (seed, epoch)
                torch.manual_seed(config["seed"] + 1_000_003 * epoch + 7919 * ranks.rank)
            stage.set_epoch(epoch)
            sums, seen, correct, classified, overflows = {}, 0, 0, False, 0
            bar.set_description(f"epoch {epoch + 1}/{epochs}")
            for number, batch in enumerate(stage.batches(epoch), start=1):
                stage.budget.refresh()  # this job's share, as other jobs start and end
                with stage.autocast():
                    if parallel is None:
                        step = stage.training_step(batch)
                        objective = step.loss
                        diverged = not math.isfinite(step.loss.item())
                    else:  # the loss DDP returns (its backward reduces the gradients), weighed by
                        objective, step = parallel(batch)  # this rank's share: DDP averages over ranks
                        [total, diverged] = distributed.all_sum(  # every rank stops together
                            [step.size, float(not math.isfinite(step.loss.item()))], ranks, stage.device
                        )
                        objective = objective * (step.size * ranks.world / total)
                # fp16: the gradient scaler skips a step that overflowed and lowers its scale; a loss
                # that stays non-finite is a divergence all the same
                overflows = overflows + 1 if diverged else 0
                if diverged and (scaler is None or overflows >= FP16_OVERFLOWS):
                    kept = (
                        f"its last checkpoint is of epoch {epoch} (its weights may be diverging already). "
                        if epoch
                        else "no checkpoint is written. "
                    )
                    raise TrainingDiverged(
                        f"{run.path}: training diverged: the loss is not finite at epoch {epoch + 1}, batch "
                        f"{number} (lr {lr:.3g}, precision {options['precision']}); "
                        + kept
                        + "Train a new run with a lower optim.lr (or more optim.warmup_epochs"
                        + (", or train.precision: fp32)" if options["precision"] != "fp32" else ")")
                    )
                optimizer.zero_grad(set_to_none=True)
                stepped = not diverged
                if scaler is None:
                    objective.backward()
                    optimizer.step()
                else:
                    scaler.scale(objective).backward()
                    scaler.step(optimizer)
                    scale = scaler.get_scale()
                    scaler.update()
                    stepped = stepped and scaler.get_scale() >= scale  # a lowered scale: the step was skipped
                if averager is not None and stepped:
                    averager.update()
                loss = step.loss.item()
                if not diverged:  # a step the fp16 scaler skipped is not in the epoch's means
                    for name, value in {"loss": loss, **step.parts}.items():
                        sums[name] = sums.get(name, 0.0) + value * step.size
                    seen += step.size
                    if step.correct is not None:
                        correct, classified = correct + step.correct, True
                bar.update()
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}")
            if ranks.distributed:  # the epoch's means over every rank's samples
                names = sorted(sums)
                totals = distributed.all_sum(
                    [seen, correct, classified] + [sums[n] for n in names], ranks, stage.device
                )
                seen, correct, classified = int(totals[0]), int(totals[1]), bool(totals[2])
                sums = dict(zip(names, totals[3:]))
            entry = {"epoch": epoch + 1, "loss": sums.pop("loss") / max(seen, 1)}
            if classified:
                entry["train_top1"] = correct / max(seen, 1)
            entry["lr"] = lr
            entry.update({name: value / max(seen, 1) for name, value in sums.items()})
            last = epoch + 1 == epochs
            optimizer_state = stage_state = None
            if sharded:  # the checkpoint's states gathered whole (every rank takes part)
                optimizer_state = distributed.full_optimizer_state(parallel, optimizer)
                stage_state = distributed.whole_tensors(stage.state_dict())
            if (epoch + 1) % options["eval_every"] == 0 or last:
                with whole(), stage.autocast(), averaged():  # a sharded model gathered whole for evaluation
                    metrics = stage.evaluate(final=last)
                entry.update({key: metrics[key] for key in stage.log_metrics if key in metrics})
                entry["test_top1"] = metrics["top1"]
                if best["top1"] is None or metrics["top1"] > best["top1"]:
                    best = {"top1": metrics["top1"], "epoch": epoch + 1}
                if stage.progress:
                    bar.write(
                        f"epoch {epoch + 1}: loss {entry['loss']:.4f}"
                        + (f", train top-1 {entry['train_top1']:.2%}" if classified else "")
                        + f", test top-1 {metrics['top1']:.2%}"
                    )
            entry["seconds"] = time.perf_counter() - started
            entry["threads"] = stage.budget.threads  # this job's share at the epoch's end: reads its wall time
            wall_time += entry["seconds"]
            if ranks.is_main:
                run.append_log(entry)
                if events is not None:
                    for key, value in entry.items():
                        if key != "epoch" and isinstance(value, (int, float)):
                            events.add_scalar(key, value, entry["epoch"])
                    events.flush()
                with averaged():  # the checkpoint's weights are the evaluated ones
                    state = {
                        **(stage.state_dict() if stage_state is None else stage_state),
                        "optimizer": optimizer.state_dict() if optimizer_state is None else optimizer_state,
                        "epoch": epoch + 1,
                        "wall_time": wall_time,
                        "best": best,
                        "rng": rng_states(),
                    }
                    if scaler is not None:
                        state["scaler"] = scaler.state_dict()
                    if averager is not None:
                        state["weight_average"] = averager.state_dict()
                    run.save_checkpoint(state)
    finally:
        bar.close()
        if events is not None:
            events.close()
        torch.use_deterministic_algorithms(previous_deterministic)
    if averager is not None:  # what the checkpoint holds: finish() and inference use the average
        averager.apply()
    with whole():
        if metrics is None:  # stopped after the last checkpoint, before its metrics were written
            with stage.autocast():
                metrics = stage.evaluate(final=True)
        metrics = {**metrics, **stage.finish(metrics)}
        finished = stage.finished_state()  # what finish() fitted (VST's decoder), kept for inference
    if finished and ranks.is_main:
        run.save_checkpoint({**run.load_checkpoint(), **finished})
    result = {
        **metrics,
        "best_top1": best["top1"],
        "best_epoch": best["epoch"],
        "epochs": epochs,
        "wall_time_s": wall_time,
        "parameters": stage.parameters_count(),
    }
    if ranks.distributed:
        result["world_size"] = ranks.world
    if ranks.is_main:
        run.write_metrics(result)
        _write_figures(stage, metrics)
    if ranks.distributed:  # every rank returns once the run folder is complete
        torch.distributed.barrier()
    return result
