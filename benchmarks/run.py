"""Runs every benchmark module in this folder (bench_*.py) with the cases of a config
(benchmarks/bench.yaml by default) and prints a table, or JSON with --json.

    python benchmarks/run.py [--quick] [--json] [--only NAME] [--device cpu|cuda]

`skelang bench` runs the same.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch
import yaml

BENCHMARKS_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = BENCHMARKS_DIR / "bench.yaml"


def load_config(path: Path, quick: bool) -> dict:
    with open(path) as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of benchmark sections, got {type(config).__name__}")
    quick_config = config.pop("quick", {}) or {}
    if quick:
        config = {**config, **quick_config}
    return config


def run(config_path: Path = DEFAULT_CONFIG, quick: bool = False, only: str | None = None, device: str = "cpu") -> dict:
    sys.path.insert(0, str(BENCHMARKS_DIR))
    import harness

    config = load_config(Path(config_path), quick)
    min_run_time = float(config.pop("min_run_time", 1.0))
    dev = torch.device(device)

    def peak_now() -> float:
        return harness.machine_peak_gflops(dev, size=512 if quick else 2048, min_run_time=min(1.0, 4 * min_run_time))

    peak = peak_now()
    cases = []
    for module_path in sorted(BENCHMARKS_DIR.glob("bench_*.py")):
        name = module_path.stem.removeprefix("bench_")
        if only and name != only:
            continue
        # An op's shapes come from skelang.ops.registry; bench.yaml holds what is not an op's.
        module = importlib.import_module(module_path.stem)
        cases.extend(module.cases({**(config.get(name) or {}), "quick": quick}, dev))
    # Every timing first, with the allocator as users have it; then the memory peaks.
    rows = [harness.time_case(case, dev, peak, min_run_time) for case in cases]
    peak_end = peak_now()  # the drift of the machine's speed over the timings
    harness.return_large_blocks_to_the_system()
    for row, case in zip(rows, cases):
        row.update(harness.measure_case_memory(case, dev))
    return {
        "machine": harness.machine_description(dev),
        "torch": torch.__version__,
        "device": str(dev),
        "peak_gflops_fp32_matmul": peak,
        "peak_gflops_fp32_matmul_end": peak_end,
        "results": rows,
    }


def benchmark_names() -> list[str]:
    """NAME of every benchmarks/bench_NAME.py."""
    return sorted(path.stem.removeprefix("bench_") for path in BENCHMARKS_DIR.glob("bench_*.py"))


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="benchmark config (YAML)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run of every case")
    parser.add_argument(
        "--only", metavar="NAME", choices=benchmark_names(), help="run only benchmarks/bench_NAME.py: %(choices)s"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    report = run(args.config, quick=args.quick, only=args.only, device=args.device)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        import harness

        start, end = report["peak_gflops_fp32_matmul"], report["peak_gflops_fp32_matmul_end"]
        print(
            f"{report['machine']}, torch {report['torch']}, peak {start:.1f} GFLOP/s (float32 matmul; "
            f"{end:.1f} after the timings); speedup = reference time / skelang time, each pair timed "
            f"in alternating rounds"
        )
        if abs(end - start) > 0.1 * start:
            print(
                f"note: the machine's peak moved {100 * (end - start) / start:+.0f}% during the run: the "
                f"ratios compare calls timed side by side, the absolute times and % peak are less sure"
            )
        print(harness.format_table(report["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
