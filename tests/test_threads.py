"""The thread budget (skelang.threads): a job's share of the CPUs beside the other live skelang
jobs, the registry of jobs, and two trainings started together on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from skelang import threads
from skelang.threads import ThreadBudget, available_cpus, live_jobs


@pytest.fixture
def jobs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SKELANG_JOBS_DIR", str(tmp_path / "jobs"))
    return tmp_path / "jobs"


def register(jobs_dir, pid: int, cpus) -> None:
    jobs_dir.mkdir(exist_ok=True)
    (jobs_dir / f"{pid}.job").write_text(" ".join(map(str, sorted(cpus))))


def test_a_job_takes_its_share_and_gives_it_back(jobs_dir):
    cpus = available_cpus()
    before = torch.get_num_threads()
    with ThreadBudget() as budget:
        assert (jobs_dir / f"{os.getpid()}.job").is_file()
        alone = budget.threads
        assert budget.share == min(before, len(cpus))
        with ThreadBudget() as inner:  # nested budgets of one process: one registration
            assert inner.threads == alone and live_jobs() == [os.getpid()]
        assert (jobs_dir / f"{os.getpid()}.job").is_file()
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            register(jobs_dir, other.pid, cpus)
            budget.refresh(force=True)
            assert budget.share == max(1, min(before, len(cpus) // 2)) and torch.get_num_threads() == budget.threads
        finally:
            other.kill()
            other.wait()
        assert budget.refresh(force=True) == alone  # the other job ended: its threads come back
        assert not (jobs_dir / f"{other.pid}.job").exists()  # a dead job's file is removed
    assert not (jobs_dir / f"{os.getpid()}.job").exists() and torch.get_num_threads() == before


def test_a_budget_inside_another_starts_from_the_same_threads(jobs_dir, monkeypatch):
    """The command line's budget around a training's: the inner one took the share the outer
    had set as its cap and took the workers off again (16 cores, alone: 9 threads and 3 workers
    of 16), and a training started beside another job kept its reduced share after that job
    ended (6 threads, then 5, of 16)."""
    monkeypatch.setattr(threads, "available_cpus", lambda: set(range(16)))
    before = torch.get_num_threads()
    torch.set_num_threads(16)  # OMP_NUM_THREADS on a 16-core machine; nothing computes here
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with ThreadBudget() as outer, ThreadBudget() as inner:
            assert (outer.share, outer.workers, outer.threads) == (16, 4, 12)
            assert (inner.share, inner.workers, inner.threads) == (16, 4, 12)
        register(jobs_dir, other.pid, range(16))
        with ThreadBudget() as outer, ThreadBudget() as inner:  # both started beside the other job
            assert (outer.threads, inner.share, inner.threads) == (6, 8, 6) and torch.get_num_threads() == 6
            other.kill()
            other.wait()
            assert inner.refresh(force=True) == 12  # it ended: the whole machine again
        assert torch.get_num_threads() == 16
    finally:
        other.kill()
        other.wait()
        torch.set_num_threads(before)


def test_a_process_waiting_for_its_children_steps_aside(jobs_dir):
    with ThreadBudget():
        with threads.waiting_for_children():
            assert live_jobs() == []
        assert live_jobs() == [os.getpid()]
    with threads.waiting_for_children():  # not registered: nothing to step aside from, nor to restore
        assert live_jobs() == []
    assert live_jobs() == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are read from /proc (Linux)")
def test_a_killed_job_not_yet_reaped_is_not_live(jobs_dir):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        register(jobs_dir, other.pid, available_cpus())
        assert live_jobs() == [other.pid]
        other.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{other.pid}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert live_jobs() == []  # a zombie: exited, its parent has not waited for it yet
    finally:
        other.kill()
        other.wait()


def test_jobs_on_other_cpus_do_not_count_and_fixed_numbers_win(jobs_dir):
    register(jobs_dir, os.getppid(), {max(available_cpus()) + 1000})  # a live job on other CPUs
    alone = min(torch.get_num_threads(), len(available_cpus()))
    with ThreadBudget() as budget:
        assert budget.share == alone and live_jobs() == [os.getpid()]
    register(jobs_dir, os.getppid(), available_cpus())  # the same job on our CPUs: it counts
    with ThreadBudget() as budget:
        assert budget.share == max(1, min(alone, len(available_cpus()) // 2))
    assert ThreadBudget(threads=1, workers=3).threads == 1 and ThreadBudget(workers=3).workers == 3
    with pytest.raises(ValueError, match="threads must be positive"):
        ThreadBudget(threads=0)


def test_workers_come_out_of_the_share(jobs_dir, monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: set(range(16)))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    budget = ThreadBudget()
    assert (budget.share, budget.workers, budget.threads) == (16, 4, 12)
    monkeypatch.setattr(threads, "available_cpus", lambda: {0, 1})
    budget = ThreadBudget()
    assert (budget.workers, budget.threads) == (0, min(2, budget.cap))


@pytest.mark.slow
def test_openmp_waits_passively_beside_other_jobs_and_spins_briefly_alone(jobs_dir):
    """Passive waiting cost a lone CTR-GCN step 1.65x on an AVX2 EPYC: only a job that starts
    beside others waits passively; a variable the user set is kept."""
    alone = {}
    assert threads.choose_wait_policy(alone) == "spin"
    assert alone == {"GOMP_SPINCOUNT": str(threads.SPIN_COUNT)}
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        register(jobs_dir, other.pid, available_cpus())
        beside = {}
        assert threads.choose_wait_policy(beside) == "passive" and beside == {"OMP_WAIT_POLICY": "PASSIVE"}
    finally:
        other.kill()
        other.wait()
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "0"}):
        assert threads.choose_wait_policy(dict(chosen)) == "as set"
    # a process that imports skelang first has the choice made before torch loads OpenMP
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import os, skelang; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == [str(threads.SPIN_COUNT), "None"], result.stderr


def test_two_trainings_started_together_each_within_2_5x_of_one_alone(tmp_path):
    """The synthetic HGLNet of the test suite, as the throughput issue measured it: alone, then
    two started together, each with the default thread budget."""

    def command(out):
        return [
            sys.executable,
            "-m",
            "skelang",
            "train",
            "--config",
            "synthetic_stgcn",
            "model.type=hglnet",
            "model.channels=[16,32]",
            "model.strides=[1,2]",
            "model.attention_heads=2",
            "train.epochs=2",
            "data.num_workers=0",
            "--out",
            str(out),
        ]

    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    env["SKELANG_JOBS_DIR"] = str(tmp_path / "jobs")

    def run(*outs):
        started = time.perf_counter()
        jobs = [
            subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for out in outs
        ]
        ends = []
        for job in jobs:
            assert job.wait(timeout=600) == 0, job.stderr.read().decode()[-2000:]
            ends.append(time.perf_counter() - started)
        return ends

    [alone] = run(tmp_path / "alone")
    together = run(tmp_path / "a", tmp_path / "b")
    assert max(together) <= 2.5 * alone, (alone, together)
