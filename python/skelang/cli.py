"""The `skelang` command line.

    skelang info [--json]     package and torch versions, CUDA build, registered operators
    skelang bench [--json]    the benchmarks of benchmarks/ (a source checkout), with ratios
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # python/skelang/cli.py -> repository root


def build_info() -> dict:
    import torch

    import skelang

    return {
        "skelang": skelang.__version__,
        "torch": torch.__version__,
        "built_against_torch": skelang._C.torch_version(),
        "cuda_kernels_built": skelang._C.with_cuda(),
        "cuda_available": torch.cuda.is_available(),
        "ops": skelang._C.registered_ops(),
    }


def cmd_info(args) -> int:
    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"skelang {info['skelang']} (torch {info['torch']}, built against {info['built_against_torch']})")
    print(f"CUDA kernels: {'built' if info['cuda_kernels_built'] else 'not built (CPU-only build)'}; "
          f"CUDA device available: {'yes' if info['cuda_available'] else 'no'}")
    print("operators:")
    for name, devices in info["ops"].items():
        print(f"  skelang::{name:<32} {', '.join(devices)}")
    return 0


def _load_benchmark_runner():
    """benchmarks/run.py of the source checkout (or of $SKELANG_BENCHMARKS_DIR)."""
    benchmarks_dir = Path(os.environ.get("SKELANG_BENCHMARKS_DIR", SOURCE_ROOT / "benchmarks"))
    run_py = benchmarks_dir / "run.py"
    if not run_py.is_file():
        raise SystemExit(
            f"skelang bench: {run_py} not found. The benchmarks live in a source checkout "
            f"(benchmarks/): use an editable install, or set SKELANG_BENCHMARKS_DIR.")
    spec = importlib.util.spec_from_file_location("skelang_benchmarks_run", run_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cmd_bench(args, rest: list[str]) -> int:
    return _load_benchmark_runner().main(rest, prog="skelang bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="skelang", description="skelang: skeleton-based action recognition enhanced by language models")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="versions, CUDA build and registered operators")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(func=lambda args, rest: cmd_info(args))

    # Options after `bench` belong to benchmarks/run.py (see `skelang bench --help`).
    bench = commands.add_parser("bench", add_help=False,
                                help="run the benchmarks: each op against its reference")
    bench.set_defaults(func=cmd_bench)

    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.func(args, rest)


if __name__ == "__main__":
    sys.exit(main())
