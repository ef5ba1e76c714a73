"""A thread budget for every skelang job: its share of the CPUs it may use.

OpenMP threads spin while they wait for work; when two jobs run more threads than there are
cores, every parallel region waits for a thread whose core another process holds, and a
training slows down 5x (skelang's C++ path) to 50x (plain PyTorch). So each job (a training,
an evaluation, a benchmark) registers itself while it runs, in a folder of the machine's
skelang jobs, and takes `cores // jobs` threads of the CPUs its affinity allows, where `jobs`
counts the live jobs whose CPUs overlap its own; it looks again every few seconds
(`ThreadBudget.refresh`), so a job that started alone gives up threads when a second one
starts, and takes them back when it ends. DataLoader workers get one thread each and come out
of the same budget.

How OpenMP threads wait between parallel regions is set once, when torch loads (skelang sets
it when it is imported before torch; `choose_wait_policy`): a job that starts beside other
live skelang jobs waits passively (OMP_WAIT_POLICY=PASSIVE), a job that starts alone spins a
short while first (GOMP_SPINCOUNT=10000) and then sleeps. Passive waiting made CTR-GCN's
NW-UCLA training step 1.65x slower alone on a 2-core AVX2 EPYC (about 1.48 s against
0.89 s); the short spin is as fast as OpenMP's default alone, and only costs where more
threads than cores run (two jobs with fixed `train.threads=2` on 2 cores: 58 s against 35 s
passive, for the synthetic HGLNet of skelang's benchmark), which the budget avoids. A
variable the user sets is kept.

`train.threads` (or `threads=`) fixes the number instead of the share; the thread count a job
starts with (OMP_NUM_THREADS, torch.set_num_threads) is never exceeded.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

# torch is imported inside the functions that use it: skelang calls choose_wait_policy from its
# own import, before torch loads OpenMP, and this module must not load torch first.

REFRESH_SECONDS = 5.0
SPIN_COUNT = 10000  # OpenMP's spins before a waiting thread sleeps, for a job that starts alone


def available_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity), or all of them."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def jobs_folder() -> Path:
    """Where live skelang jobs register: $SKELANG_JOBS_DIR, or a per-user folder of the
    machine's temporary directory."""
    folder = os.environ.get("SKELANG_JOBS_DIR")
    if folder:
        return Path(folder)
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"skelang-jobs-{user}"


def _job_file() -> Path:
    """This process's registration in the jobs folder (it holds the CPUs the job may use)."""
    return jobs_folder() / f"{os.getpid()}.job"


def _alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped by its parent, as a killed
    subprocess is until its parent waits for it) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):  # /proc exists on Linux only
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"  # the state follows "pid (name) "
    return True


def live_jobs(cpus: set[int] | None = None) -> list[int]:
    """pids of the registered skelang jobs that are alive and may use any of `cpus` (this
    process's by default); the files of dead jobs are removed."""
    cpus = available_cpus() if cpus is None else cpus
    folder = jobs_folder()
    pids = []
    for entry in folder.glob("*.job") if folder.is_dir() else ():
        try:
            pid = int(entry.stem)
            theirs = {int(c) for c in entry.read_text().split()}
        except (ValueError, OSError):
            continue
        if not _alive(pid):
            entry.unlink(missing_ok=True)
            continue
        if theirs & cpus:
            pids.append(pid)
    return sorted(pids)


def choose_wait_policy(environ=os.environ) -> str:
    """Sets how OpenMP threads wait (see the module's documentation) in `environ`, before torch
    loads: "passive" beside other live skelang jobs, "spin" (GOMP_SPINCOUNT) alone, or "as set"
    where OMP_WAIT_POLICY or GOMP_SPINCOUNT is already set. Returns the choice."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return "as set"
    if live_jobs():
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "passive"
    environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return "spin"


class ThreadBudget:
    """The threads of one job (a context manager that registers it while it runs).

    threads: None shares the CPUs with the other live jobs (see the module's documentation),
             a number fixes the intra-op threads.
    workers: DataLoader worker processes; None chooses: none where the share is 2 threads or
             fewer (skelang's preprocessing is C++ and cheap next to a training step), else a
             quarter of the share, at most 4. Workers count against the share.
    """

    def __init__(self, threads: int | None = None, workers: int | None = None):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be positive, got {threads}")
        import torch

        self.fixed_threads, self.fixed_workers = threads, workers
        self.cpus = available_cpus()
        # OMP_NUM_THREADS or torch.set_num_threads before the process's first budget: never
        # exceeded. A budget nested in another (the command line's around a training's) starts
        # from the same count, not from the share the outer one has set.
        self.cap = _threads_before if _registrations else torch.get_num_threads()
        self.path = _job_file()
        self.registered = False
        self.last_refresh = 0.0
        self.share = self._share()

    def _share(self) -> int:
        others = [pid for pid in live_jobs(self.cpus) if pid != os.getpid()]
        return max(1, min(self.cap, len(self.cpus) // (len(others) + 1)))

    @property
    def workers(self) -> int:
        if self.fixed_workers is not None:
            return self.fixed_workers
        return 0 if self.share <= 2 else min(4, self.share // 4)

    @property
    def threads(self) -> int:
        """Intra-op threads of the job's own process."""
        if self.fixed_threads is not None:
            return self.fixed_threads
        return max(1, self.share - self.workers)

    def refresh(self, force: bool = False) -> int:
        """Look at the live jobs again (at most every REFRESH_SECONDS) and set torch's thread
        count to this job's share; returns it."""
        import torch

        now = time.monotonic()
        if force or now - self.last_refresh >= REFRESH_SECONDS:
            self.last_refresh = now
            self.share = self._share()
            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
        return self.threads

    def __enter__(self) -> ThreadBudget:
        import torch

        global _registrations, _threads_before
        if _registrations == 0:
            _threads_before = torch.get_num_threads()
            with contextlib.suppress(OSError):  # a read-only temporary folder: no registry, still a budget
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(" ".join(map(str, sorted(self.cpus))))
        _registrations += 1  # one file per process, however many budgets it nests
        self.registered = True
        self._previous = torch.get_num_threads()
        self.refresh(force=True)
        return self

    def __exit__(self, *exc) -> None:
        import torch

        global _registrations
        if self.registered:
            _registrations -= 1
            if _registrations == 0:
                self.path.unlink(missing_ok=True)
            self.registered = False
        torch.set_num_threads(self._previous)


_registrations = 0  # budgets entered in this process
_threads_before = 1  # torch's thread count when the first of them was entered


@contextlib.contextmanager
def waiting_for_children():
    """While this process only waits for the jobs it started (`skelang ablate`'s trainings), it
    does not count as a live job: its children share the CPUs between themselves alone, and one
    started alone spins as a lone job does (choose_wait_policy). Registered again afterwards."""
    path = _job_file()
    registered = _registrations > 0 and path.is_file()
    if registered:
        cpus = path.read_text()
        path.unlink(missing_ok=True)
    try:
        yield
    finally:
        if registered and _registrations > 0:
            with contextlib.suppress(OSError):
                path.write_text(cpus)


def worker_init(_worker_id: int) -> None:
    """DataLoader worker processes compute on one thread each (part of the budget)."""
    import torch

    torch.set_num_threads(1)
