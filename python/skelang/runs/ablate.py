"""Ablation sweeps: a base config, variants of it, several seeds each, and a table of what each
variant changes.

A sweep file (YAML):

    base: nw_ucla_hglnet_fast          # a config file or a shipped config's name
    overrides: {train.epochs: 10}      # for every run
    seeds: [0, 1]                      # default [the base's seed]
    variants:                          # name -> overrides; or a grid:
      no_gsm: {model.gsm: false}
      no_gta: {model.gta: false}
    grid: {model.gsm: [true, false], model.gta: [true, false]}   # every combination

The variant `base` (the base config with the sweep's overrides) is always run: each variant is
compared with it. Runs go to OUT/<variant>/seed<k>; a finished run is kept, an unfinished one
resumes, so a sweep killed midway continues where it stopped. With `jobs` > 1, that many runs
train side by side, each taking its share of the CPUs (skelang.threads). The results:
results.csv (one row per run), results.md (per variant: top-1 mean +- std over seeds, and the
difference to the base with a 95% paired bootstrap interval over the test samples, matched by
sample id) and results.png.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import json
import os
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from skelang.files import atomic_open, write_text_atomic
from skelang.runs.config import (
    _Bad,
    apply_override,
    config_path,
    flatten,
    format_override,
    read_config_file,
    resolve_config,
)
from skelang.runs.directory import METRICS, RunDirectory, config_changes
from skelang.runs.ensemble import align, load_scores
from skelang.schema import load_yaml
from skelang.stats import BOOTSTRAP_DRAWS, bootstrap_interval
from skelang.threads import waiting_for_children

if TYPE_CHECKING:
    import pandas

SWEEP_KEYS = ("base", "overrides", "seeds", "variants", "grid")
RESULT_FILES = ("results.csv", "results.md", "results.png")
PARENT_ENV = "SKELANG_ABLATE_PARENT"  # the sweep's process id, in the environment of each training


def end_with_the_sweep() -> None:
    """Called first by `skelang train`: in a training that a sweep started, end when the
    sweep's process ends, even when it is killed (SIGKILL leaves it no chance to stop its
    children), so that no orphan goes on training and holding its run folder, which the
    sweep run again would find locked. Linux (prctl PR_SET_PDEATHSIG); elsewhere nothing."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != int(parent):  # the sweep ended before the call above
        os.kill(os.getpid(), signal.SIGTERM)


def _overrides(mapping: dict, where: str) -> list[str]:
    """{"a.b": value} -> ["a.b=value"] (values as YAML)."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: expected a mapping of key: value, got {mapping!r:.60}")
    return [format_override(key, value) for key, value in mapping.items()]


def shipped_sweeps() -> dict[str, Path]:
    """name -> path of every sweep shipped with skelang (package data)."""
    folder = resources.files("skelang") / "sweeps"
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }


def sweep_path(name: str | Path) -> Path:
    """A sweep file: `name` itself when it is a file, else the shipped sweep of that name."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_sweeps()
    if path.name.removesuffix(".yaml") in shipped:
        return shipped[path.name.removesuffix(".yaml")]
    raise ValueError(f"{name}: no such sweep file, and no shipped sweep of that name ({', '.join(shipped)})")


def read_sweep(path: str | Path) -> dict:
    """The sweep file's runs: {"base": config path, "seeds": [...], "variants": {name:
    [override, ...]}} (the variant "base" first); errors name the file and the key."""
    path = sweep_path(path)
    try:
        sweep = load_yaml(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the sweep: {error}") from None
    if not isinstance(sweep, dict) or "base" not in sweep:
        raise ValueError(f"{path}: expected a mapping with a 'base' config (and variants or grid)")
    unknown = sorted(set(sweep) - set(SWEEP_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(SWEEP_KEYS)})")
    base = str(sweep["base"])
    if not Path(base).is_absolute() and (path.parent / base).is_file():
        base = str(path.parent / base)
    common = _overrides(sweep.get("overrides") or {}, f"{path}: overrides")
    variants = {"base": []}
    for name, changes in (sweep.get("variants") or {}).items():
        if name == "base" or not isinstance(name, str) or "/" in name:
            raise ValueError(f"{path}: variants: {name!r} is not a variant name (any but 'base', no '/')")
        variants[name] = _overrides(changes, f"{path}: variants.{name}")
    grid = sweep.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"{path}: grid: expected key: [values, ...] lists")
    for values in itertools.product(*grid.values()) if grid else ():
        changes = dict(zip(grid, values))
        name = ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in changes.items())
        variants[name] = _overrides(changes, f"{path}: grid")
    seeds = sweep.get("seeds")
    if seeds is not None and not (
        isinstance(seeds, list)
        and seeds
        and all(isinstance(s, int) and s >= 0 for s in seeds)
        and len(set(seeds)) == len(seeds)
    ):
        raise ValueError(f"{path}: seeds: expected a list of distinct non-negative integers, got {seeds!r}")
    return {"base": base, "common": common, "seeds": seeds, "variants": variants, "path": str(path)}


def variant_configs(sweep: dict) -> dict[tuple[str, int], dict]:
    """(variant, seed) -> resolved config of every run of the sweep (checked before any runs)."""
    path = config_path(sweep["base"])
    raw = read_config_file(path)
    seeds = sweep["seeds"] or [raw.get("seed", 0)]  # RunConfig's default seed is 0
    source = sweep.get("path", "the sweep")
    configs = {}
    for name, changes in sweep["variants"].items():
        for seed in seeds:
            variant = yaml.safe_load(yaml.safe_dump(raw))
            try:
                for override in [*sweep["common"], *changes, f"seed={seed}"]:
                    apply_override(variant, override)
            except _Bad as error:
                raise ValueError(f"{source}: variant {name}: {error}") from None
            configs[(name, seed)] = resolve_config(variant, f"{source}: variant {name} (seed {seed}) of {path}")
    return configs


def _check_sweep_folder(out_dir: Path, configs: dict, sweep_file: Path) -> None:
    """`out_dir` holds nothing but this sweep's files, and its runs were trained with the
    sweep's configs as they are now (up to what a resume may change: a run with fewer epochs
    trains on): a ValueError before any training, naming what differs."""
    if not out_dir.is_dir():
        return
    variants = {name for name, _ in configs}
    others = sorted(
        entry.name
        for entry in out_dir.iterdir()
        if entry.name not in variants
        and entry.name not in RESULT_FILES
        and not entry.name.startswith(".")
        and entry.resolve() != sweep_file.resolve()  # the sweep file itself may live there
    )
    if others:
        raise ValueError(
            f"--out {out_dir}: holds files that are not this sweep's ({', '.join(others[:5])}"
            f"{', ...' if len(others) > 5 else ''}): choose a new folder for the sweep"
        )
    for (name, seed), config in configs.items():
        run = RunDirectory(out_dir / name / f"seed{seed}")
        if run.file("config.yaml").is_file():
            changed = config_changes(run.config, config)
            if run.config["train"]["epochs"] > config["train"]["epochs"]:  # a resume cannot shorten it
                changed.append("train.epochs")
            if changed:
                saved, wanted = flatten(run.config), flatten(config)
                details = ", ".join(f"{key} {saved.get(key)!r} -> {wanted.get(key)!r}" for key in changed[:5])
                raise ValueError(
                    f"{run.path} was trained with another config than the sweep's now ({details}): "
                    f"delete that run to train it again, or give the changed sweep a new --out"
                )


def _train_command(config_file: Path, out: Path, resume: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "skelang",
        "train",
        "--config",
        str(config_file),
        "--out",
        str(out),
        "--no-progress",
        *(["--resume"] if resume else []),
    ]


def ablate(sweep_path: str | Path, out_dir: str | Path, jobs: int = 1, progress: bool = True) -> pandas.DataFrame:
    """Runs the sweep (see the module's documentation) into `out_dir` and returns its table:
    a pandas DataFrame with one row per run (columns variant, seed, top1 and top5 as
    fractions, wall_time_s in seconds, run: the run's folder), the rows of results.csv.
    Per variant, e.g. ``table.groupby("variant").top1.agg(["mean", "std"])``; the paired
    intervals against the base are in results.md."""
    import pandas

    sweep = read_sweep(sweep_path)
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    configs = variant_configs(sweep)
    out_dir = Path(out_dir)
    _check_sweep_folder(out_dir, configs, Path(sweep_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    pending = []
    for (name, seed), config in configs.items():
        run = RunDirectory(out_dir / name / f"seed{seed}")
        if run.file(METRICS).is_file() and run.exists() and run.config["train"]["epochs"] == config["train"]["epochs"]:
            continue  # finished
        run.path.mkdir(parents=True, exist_ok=True)
        config_file = out_dir / name / f"seed{seed}.yaml"
        write_text_atomic(config_file, yaml.safe_dump(config, sort_keys=False))
        pending.append(_train_command(config_file, run.path, resume=run.file("config.yaml").is_file()))
    running: list[tuple[subprocess.Popen, Path]] = []
    failures = []
    with waiting_for_children():  # the trainings share the cores; this process only waits
        for command in [*pending, None]:
            while running and (len(running) >= jobs or command is None):
                job, log = running[0]
                job.wait()  # in start order: a sweep's runs take about the same time
                running.pop(0)
                if job.returncode != 0:
                    failures.append(f"{log}: {log.read_text().strip()[-500:]}")
            if command is None:
                break
            log = Path(command[command.index("--out") + 1] + ".log")
            if progress:
                print(f"ablate: training {command[command.index('--out') + 1]}", file=sys.stderr, flush=True)
            with open(log, "w") as output:  # the child's messages; a pipe could fill and block it
                env = {**os.environ, PARENT_ENV: str(os.getpid())}
                running.append((subprocess.Popen(command, stdout=output, stderr=output, env=env), log))
    if failures:
        raise ValueError("ablate: runs failed (the others are kept; run again to retry):\n  " + "\n  ".join(failures))
    table = pandas.DataFrame(collect(out_dir, configs))
    write_results(out_dir, table)
    return table


def collect(out_dir: Path, configs: dict) -> list[dict]:
    rows = []
    for name, seed in configs:
        run = RunDirectory(out_dir / name / f"seed{seed}")
        metrics = json.loads(run.file(METRICS).read_text())
        rows.append(
            {
                "variant": name,
                "seed": seed,
                "top1": metrics["top1"],
                "top5": metrics["top5"],
                "wall_time_s": metrics["wall_time_s"],
                "run": str(run.path),
            }
        )
    return rows


def paired_bootstrap(
    base_runs: list[Path], runs: list[Path], draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> tuple[float, float, float]:
    """(difference of top-1, 2.5% and 97.5% quantiles) of a variant against the base: runs
    paired by seed, samples matched by id, the test samples resampled with replacement."""
    base_correct, correct = [], []
    for base_run, run in zip(base_runs, runs):
        base_scores, scores = align([load_scores(base_run), load_scores(run)])
        base_correct.append(base_scores.logits.argmax(1) == base_scores.labels)
        correct.append(scores.logits.argmax(1) == scores.labels)
    difference = np.mean(correct, axis=0).astype(float) - np.mean(base_correct, axis=0)  # (N,) over seeds
    return bootstrap_interval(difference, draws, seed)


def summarize(rows: list[dict]) -> list[dict]:
    """Per variant: runs, top-1 mean and std over seeds, and the paired difference to the base."""
    by_variant: dict[str, list[dict]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    base = {row["seed"]: Path(row["run"]) for row in by_variant["base"]}
    summary = []
    for name, runs in by_variant.items():
        top1 = [row["top1"] for row in runs]
        entry = {
            "variant": name,
            "runs": len(runs),
            "top1_mean": float(np.mean(top1)),
            "top1_std": float(np.std(top1, ddof=1)) if len(top1) > 1 else 0.0,
            "wall_time_s": float(np.mean([row["wall_time_s"] for row in runs])),
        }
        if name != "base":
            paired = [(base[row["seed"]], Path(row["run"])) for row in runs if row["seed"] in base]
            delta, low, high = paired_bootstrap([b for b, _ in paired], [r for _, r in paired])
            entry.update(delta=delta, delta_low=low, delta_high=high)
        summary.append(entry)
    return summary


def write_results(out_dir: Path, table: pandas.DataFrame) -> None:
    """results.csv (the table), results.md and results.png (its summary per variant)."""
    write_text_atomic(out_dir / "results.csv", table.to_csv(index=False, lineterminator="\n"))
    summary = summarize(table.to_dict("records"))
    lines = [
        "| variant | runs | top-1 (mean +- std) | vs base (95% paired bootstrap) | wall time |",
        "|---|---|---|---|---|",
    ]
    for entry in summary:
        delta = (
            "-"
            if "delta" not in entry
            else f"{entry['delta'] * 100:+.1f} [{entry['delta_low'] * 100:+.1f}, {entry['delta_high'] * 100:+.1f}]"
        )
        lines.append(
            f"| {entry['variant']} | {entry['runs']} | {entry['top1_mean']:.2%} +- {entry['top1_std']:.2%} | "
            f"{delta} | {entry['wall_time_s']:.0f} s |"
        )
    write_text_atomic(out_dir / "results.md", "\n".join(lines) + "\n")
    _plot(out_dir / "results.png", summary)


def _plot(path: Path, summary: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [entry["variant"] for entry in summary]
    figure, axis = plt.subplots(figsize=(max(4, 0.9 * len(names) + 2), 3.5))
    axis.bar(
        names,
        [100 * e["top1_mean"] for e in summary],
        yerr=[100 * e["top1_std"] for e in summary],
        color=["tab:gray" if n == "base" else "tab:blue" for n in names],
        capsize=4,
    )
    axis.set_ylabel("test top-1 (%)")
    low = min(100 * e["top1_mean"] - 100 * e["top1_std"] for e in summary)
    axis.set_ylim(max(0, low - 5), 100)
    axis.set_title("ablation: mean over seeds (error bars: std)")
    plt.setp(axis.get_xticklabels(), rotation=30, ha="right")
    figure.tight_layout()
    with atomic_open(path, "wb") as file:
        figure.savefig(file, format="png", dpi=120)
    plt.close(figure)
