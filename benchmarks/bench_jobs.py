"""Two trainings side by side on one machine, against one alone: each job takes its share of
the CPUs (skelang.threads), so neither collapses. The skelang column times the two started
together (the wall time until both end), the reference column one alone; their ratio, shown
as the speedup, is the inverse of each job's slowdown (0.5x: twice as long, as halving the
cores should give at best; the issue's target is at most 2.2x)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import torch
from harness import Case


def _trainings(command: list[str], count: int):
    def run():
        env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
        with tempfile.TemporaryDirectory() as folder:
            env["SKELANG_JOBS_DIR"] = os.path.join(folder, "jobs")
            jobs = [
                subprocess.Popen(
                    [sys.executable, "-m", "skelang", "train", *command, "--out", os.path.join(folder, f"run{i}")],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for i in range(count)
            ]
            for job in jobs:
                if job.wait() != 0:
                    raise RuntimeError(job.stderr.read().decode()[-2000:])

    return run


def cases(config: dict, device: torch.device) -> list[Case]:
    if device.type != "cpu":
        return []
    command = [str(word) for word in config["command"]]
    return [
        Case(
            name="two trainings side by side",
            params="vs one alone; speedup = 1 / slowdown",
            flops=None,
            skelang=_trainings(command, 2),
            reference=_trainings(command, 1),
            runs=int(config.get("runs", 3)),
        )
    ]
