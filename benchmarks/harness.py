"""Benchmark harness: each case runs the skelang op and its reference in one process and
reports median times, their ratio, peak memory, and achieved GFLOP/s against the
machine's peak, measured by a large float32 matmul in the same run.

A benchmark module (``bench_*.py`` beside this file) defines ``cases(config, device)``
returning a list of :class:`Case`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.utils.benchmark as tb


def return_large_blocks_to_the_system() -> None:
    """Make glibc serve every block over 64 KiB with mmap and give it back on free.

    By default glibc raises its mmap threshold after large frees and keeps the memory for
    reuse, so the resident-set size would not show what a call allocates. With a fixed
    threshold, the growth of the high-water mark during a call is its peak memory.
    """
    libc_name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or libc_name is None:
        return
    libc = ctypes.CDLL(libc_name)
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 64 * 1024)
    libc.malloc_trim(0)  # hand back what the heap already holds


@dataclasses.dataclass
class Case:
    name: str  # e.g. "graph_aggregate fwd+bwd"
    params: str  # e.g. "C=64 A=(1,C,V,V)"
    flops: float | None  # floating-point operations of one call, None where they do not apply
    skelang: Callable[[], object]
    reference: Callable[[], object]
    samples: int | None = None  # samples per call, for a throughput column (training steps)
    peer: Callable[[], object] | None = None  # the same work in another library, where installed
    peer_name: str = ""
    # A whole-process case (it starts programs and waits for them): after one untimed run of
    # the reference, each side is timed over this many runs with a clock, with no memory
    # columns, since each run takes seconds and its memory lives in other processes. None:
    # timed by torch.utils.benchmark, as ops are.
    runs: int | None = None


MIN_MEASUREMENTS = 5  # calls timed at least, however long one call takes


def median_seconds(fn: Callable[[], object], min_run_time: float) -> float:
    """Median seconds of one call over at least `min_run_time` of calls and at least
    MIN_MEASUREMENTS measurements (blocked_autorange alone times a training step of seconds
    once or twice, a median of one or two)."""
    # Timer runs on one thread unless told; time with the threads the run was given.
    timer = tb.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    times = list(timer.blocked_autorange(min_run_time=min_run_time).times)
    while len(times) < MIN_MEASUREMENTS:
        times.append(_clock(fn))  # (Timer.timeit would add two warm-up calls each time)
    return statistics.median(times)


def interleaved_medians(fns: list[Callable[[], object]], min_run_time: float) -> list[float]:
    """Median seconds of one call of each of `fns`, timed in alternating rounds: each round
    times a block of calls of every fn in turn, so that a machine whose speed drifts during
    the run (a shared host, a varying clock) slows every side alike and their ratios stay
    true. A block is as many calls as take about 1/20 of min_run_time (one at least); rounds
    go on until every fn was timed for min_run_time and MIN_MEASUREMENTS rounds at least.
    Each fn is first called once to size its blocks (that call is not counted)."""
    blocks = []
    for fn in fns:
        blocks.append(max(1, int(min_run_time / 20 / max(_clock(fn), 1e-9))))
    times: list[list[float]] = [[] for _ in fns]
    spent = [0.0] * len(fns)
    while min(spent) < min_run_time or len(times[0]) < MIN_MEASUREMENTS:
        for i, (fn, number) in enumerate(zip(fns, blocks)):
            started = time.perf_counter()
            for _ in range(number):
                fn()
            elapsed = time.perf_counter() - started
            spent[i] += elapsed
            times[i].append(elapsed / number)
    return [statistics.median(t) for t in times]


def _process_memory(field: str) -> int:
    """Bytes of a /proc/self/status field: VmRSS (resident now) or VmHWM (its high-water mark)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Memory that one call of `fn` needs above what was allocated before it.

    CUDA: the caching allocator's peak. CPU (Linux): growth of the resident-set high-water
    mark, reset through /proc/self/clear_refs before the call. None where neither works.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current VmRSS
        before = _process_memory("VmRSS")
        fn()
        return max(0, _process_memory("VmHWM") - before)
    except OSError:
        return None


def saved_tensor_bytes(fn: Callable[[], object]) -> int:
    """Bytes that autograd keeps for backward during one call of `fn` (activation memory):
    every tensor packed by a saved-tensors hook, each storage counted once. Exact and
    independent of the allocator, unlike the resident-set peak."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values())


def machine_peak_gflops(device: torch.device, size: int = 2048, min_run_time: float = 1.0) -> float:
    """float32 GFLOP/s of a large square matmul: the machine's practical peak."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def matmul():
        torch.mm(a, b)
        sync()

    return 2 * size**3 / median_seconds(matmul, min_run_time) / 1e9


def _synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    if device.type != "cuda":
        return fn

    def call():
        fn()
        torch.cuda.synchronize(device)

    return call


def time_case(case: Case, device: torch.device, peak_gflops: float, min_run_time: float) -> dict:
    """Median times of the skelang op, its reference and its peer (where there is one), timed
    in alternating rounds (`interleaved_medians`; a whole-process case alternates its runs),
    their ratios and GFLOP/s."""
    row = {"name": case.name, "params": case.params}
    labels = ["skelang", "reference"] + (["peer"] if case.peer is not None else [])
    calls = [_synchronized(getattr(case, label), device) for label in labels]
    if case.runs is None:
        for call in calls:
            call()  # warm-up
        medians = interleaved_medians(calls, min_run_time)
    else:
        case.reference()  # untimed: the first run warms the file cache for both sides
        clocked = [[_clock(call) for call in calls] for _ in range(case.runs)]
        medians = [statistics.median(run[i] for run in clocked) for i in range(len(calls))]
    seconds = dict(zip(labels, medians))
    for label in ("skelang", "reference"):
        row[f"{label}_ms"] = seconds[label] * 1e3
        row[f"{label}_gflops"] = None if case.flops is None else case.flops / seconds[label] / 1e9
        row[f"{label}_samples_per_s"] = None if case.samples is None else case.samples / seconds[label]
    row["speedup"] = row["reference_ms"] / row["skelang_ms"]
    row["peer"], row["peer_ms"], row["peer_speedup"] = case.peer_name or None, None, None
    if case.peer is not None:
        row["peer_ms"] = seconds["peer"] * 1e3
        row["peer_speedup"] = row["peer_ms"] / row["skelang_ms"]
    row["skelang_fraction_of_peak"] = None if case.flops is None else row["skelang_gflops"] / peak_gflops
    return row


def _clock(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure_case_memory(case: Case, device: torch.device) -> dict:
    """Peak memory of one call of each side; on the CPU, run after every timing (see
    return_large_blocks_to_the_system, which slows allocation down). Whole-process cases
    have none."""
    if case.runs is not None:
        return {f"{label}_{kind}_mib": None for label in ("skelang", "reference") for kind in ("peak", "saved")} | {
            "memory_ratio": None,
            "saved_ratio": None,
        }
    row = {}
    sides = [("skelang", case.skelang), ("reference", case.reference)]
    if case.peer is not None:
        sides.append(("peer", case.peer))
    for label, fn in sides:
        memory = peak_memory_bytes(_synchronized(fn, device), device)
        row[f"{label}_peak_mib"] = None if memory is None else memory / 2**20
        row[f"{label}_saved_mib"] = saved_tensor_bytes(fn) / 2**20
    if row["skelang_peak_mib"] is not None and row["reference_peak_mib"]:
        row["memory_ratio"] = row["skelang_peak_mib"] / row["reference_peak_mib"]
    else:
        row["memory_ratio"] = None
    row["saved_ratio"] = row["skelang_saved_mib"] / row["reference_saved_mib"] if row["reference_saved_mib"] else None
    return row


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def format_table(rows: list[dict]) -> str:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    header = (
        "case",
        "params",
        "skelang ms",
        "ref ms",
        "speedup",
        "samples/s",
        "ref samples/s",
        "GFLOP/s",
        "% peak",
        "skelang MiB",
        "ref MiB",
        "mem ratio",
        "saved MiB",
        "ref saved",
        "saved ratio",
        "peer",
        "peer ms",
        "vs peer",
        "peer MiB",
        "peer saved",
    )
    lines = [header]
    for r in rows:
        lines.append(
            (
                r["name"],
                r["params"],
                fmt(r["skelang_ms"], ".2f"),
                fmt(r["reference_ms"], ".2f"),
                fmt(r["speedup"], ".2f") + "x",
                fmt(r.get("skelang_samples_per_s"), ".1f"),
                fmt(r.get("reference_samples_per_s"), ".1f"),
                fmt(r["skelang_gflops"], ".1f"),
                fmt(r["skelang_fraction_of_peak"] and 100 * r["skelang_fraction_of_peak"], ".1f"),
                fmt(r["skelang_peak_mib"], ".1f"),
                fmt(r["reference_peak_mib"], ".1f"),
                fmt(r["memory_ratio"], ".2f"),
                fmt(r.get("skelang_saved_mib"), ".1f"),
                fmt(r.get("reference_saved_mib"), ".1f"),
                fmt(r.get("saved_ratio"), ".2f"),
                r.get("peer") or "-",
                fmt(r.get("peer_ms"), ".2f"),
                fmt(r.get("peer_speedup"), ".2f") + ("x" if r.get("peer_speedup") else ""),
                fmt(r.get("peer_peak_mib"), ".1f"),
                fmt(r.get("peer_saved_mib"), ".1f"),
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for k, line in enumerate(lines):
        out.append(
            "  ".join(
                str(cell).ljust(w) if i < 2 else str(cell).rjust(w) for i, (cell, w) in enumerate(zip(line, widths))
            )
        )
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
