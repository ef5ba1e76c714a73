"""A run folder and everything it holds; the one way to open a run.

    config.yaml     the resolved configuration (earlier skelang forms are converted on reading)
    log.jsonl       one line per epoch (log.csv beside it: the same rows as CSV)
    checkpoint.pt   what the stage saves, the optimizer, the epoch, the RNG states (atomic, every epoch)
    checkpoint.sha256  the checkpoint's sha256, verified on every load
    metrics.json    the final evaluation
    scores.npz      per-sample test outputs: sample ids, labels, logits
    .lock           held (flock) by the one process that writes the run; names its pid
    + stage files   glossary.json (vst), narratives.pt and adapter/ (lm)

Every file is written whole or not at all (skelang.files). A run folder is written by one
process at a time: `RunDirectory.lock()` takes an OS lock for the whole run and refuses a
second writer with the holder's pid.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import yaml

from skelang.files import atomic_open, write_text_atomic
from skelang.runs.config import RESUMABLE_CHANGES, absolute_paths, flatten, resolve_config

CONFIG = "config.yaml"
LOG = "log.jsonl"
LOG_CSV = "log.csv"
CHECKPOINT = "checkpoint.pt"
CHECKSUM = "checkpoint.sha256"
METRICS = "metrics.json"
SCORES = "scores.npz"
LOCK = ".lock"
# what a run writes into its folder before its first epoch is logged
RUN_FILES = frozenset({CONFIG, LOG, LOG_CSV, CHECKSUM, LOCK})

# The lock files this process holds. A forked child (a DataLoader worker) shares the lock
# with its parent while it keeps its copy of the descriptor open, and would hold the run
# after its parent died; each child closes its copies at once.
_HELD_LOCKS: set = set()


def _close_held_locks_in_child() -> None:
    for handle in list(_HELD_LOCKS):
        handle.close()
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_locks_in_child)


class RunLockedError(ValueError):
    """Another process holds the run folder."""


def read_json(path: Path):
    """A JSON file's content; a damaged file is a ValueError naming it and the line."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: damaged JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None


class RunDirectory:
    """The run folder at `path` (it may not exist yet)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_file = None

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # --- opening ---------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the folder holds a run's config and checkpoint."""
        return self.file(CONFIG).is_file() and self.file(CHECKPOINT).is_file()

    @property
    def config(self) -> dict:
        """The resolved config.yaml (an error names the file and the line or key)."""
        path = self.file(CONFIG)
        if not path.is_file():
            raise ValueError(f"{self.path}: no {CONFIG}: not a skelang training run")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: damaged YAML: {error}") from None
        return resolve_config(raw, str(path))

    @property
    def stage(self) -> str:
        return self.config["stage"]

    # --- the lock ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDirectory]:
        """Holds the run folder for this process (creating it); RunLockedError if another
        process holds it. Re-entrant within one RunDirectory. When the block fails on bad input
        (ValueError, OSError) before the run has logged an epoch, what it made is removed
        again: the folders it created with all in them, or else the run's own files it added
        to a folder that was there. An interrupted run keeps its files (--resume)."""
        if self._lock_file is not None:
            yield self
            return
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path} is a file: choose a new folder for the run")
        created = [folder for folder in (self.path, *self.path.parents) if not folder.exists()]
        existed = {name for name in RUN_FILES if self.file(name).exists()}
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.file(LOCK), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLockedError(
                f"{self.path} is in use by another skelang process (pid {holder}); wait for it to finish or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle
        _HELD_LOCKS.add(handle)
        try:
            yield self
        except (ValueError, OSError):  # bad input (an interrupted run keeps its files: --resume)
            if not self.file(CHECKPOINT).exists() and not self.file(LOG).exists():
                self._remove_what_the_start_made(created, existed)
            raise
        finally:
            self._lock_file = None
            _HELD_LOCKS.discard(handle)
            handle.close()  # releases the lock

    def _remove_what_the_start_made(self, created: list[Path], existed: set[str]) -> None:
        """`created`: the folders lock() made, the run folder first; `existed`: the run's own
        files that were in it before."""
        with contextlib.suppress(OSError):
            if created:
                shutil.rmtree(self.path)  # all in it was made by this start
                for folder in created[1:]:
                    folder.rmdir()  # the parents it made, while empty
            else:
                for name in RUN_FILES - existed:
                    self.file(name).unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> list[Path]:
        """Deletes temporary files left by writes that were killed (.NAME.*.tmp)."""
        stale = [p for p in self.path.glob(".*.tmp") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    # --- starting and resuming ----------------------------------------------------------------

    def start(self, config: dict, resume: bool) -> tuple[dict | None, dict | None]:
        """Prepares the folder and writes config.yaml; call inside lock(). A fresh run needs a
        folder without a run (a run killed before its first checkpoint counts as none: it
        starts again); a resume needs the same config up to RESUMABLE_CHANGES. Returns (the
        checkpoint to resume from or None, the final metrics when the resumed run had already
        finished, else None)."""
        self.remove_stale_temporaries()
        if self.file(CHECKPOINT).is_file():
            if not resume:
                raise ValueError(f"{self.path} already holds a run: resume it (--resume) or choose another folder")
            changed = config_changes(self.config, config)
            if changed:
                raise ValueError(
                    f"{self.path}: cannot resume with a different {', '.join(changed)} "
                    f"(only {', '.join(RESUMABLE_CHANGES)} may change)"
                )
            checkpoint = self.load_checkpoint()
            if checkpoint["epoch"] > config["train"]["epochs"]:  # allowed, never silent
                print(
                    f"{self.path}: train.epochs={config['train']['epochs']}, but the run has trained "
                    f"{checkpoint['epoch']} epochs already: it is not shortened (train a new run for fewer)",
                    file=sys.stderr,
                    flush=True,
                )
            if checkpoint["epoch"] >= config["train"]["epochs"] and self.file(METRICS).is_file():
                return checkpoint, self.metrics()
            before = self.config["train"]["epochs"]
            # allowed, but never unannounced
            if before != config["train"]["epochs"] and config["train"]["epochs"] > checkpoint["epoch"]:
                print(
                    f"{self.path}: train.epochs {before} -> {config['train']['epochs']}: the run goes on "
                    f"from epoch {checkpoint['epoch']} to {config['train']['epochs']}",
                    file=sys.stderr,
                    flush=True,
                )
            write_text_atomic(self.file(CONFIG), yaml.safe_dump(config, sort_keys=False))
            return checkpoint, None
        started = self.file(CONFIG).is_file()
        if resume and not started:
            raise ValueError(f"{self.path}: no {CHECKPOINT} to resume from (no run was started there)")
        others = sorted(p.name for p in self.path.iterdir() if p.name not in (LOCK, CONFIG, LOG, LOG_CSV, CHECKSUM))
        if others:
            raise ValueError(
                f"{self.path} is not empty ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}): "
                f"choose a new folder for the run"
            )
        for name in (LOG, LOG_CSV, CHECKSUM):  # a run killed before its first checkpoint starts again
            self.file(name).unlink(missing_ok=True)
        write_text_atomic(self.file(CONFIG), yaml.safe_dump(config, sort_keys=False))
        return None, None

    # --- files ------------------------------------------------------------------------------------

    def load_checkpoint(self) -> dict:
        """The checkpoint, verified against checkpoint.sha256 (runs of earlier versions have
        none and load unverified); a damaged file is a ValueError naming it."""
        path = self.file(CHECKPOINT)
        if not path.is_file():
            raise ValueError(f"{self.path}: no {CHECKPOINT}: not a skelang training run")
        data = path.read_bytes()
        checksums = self.file(CHECKSUM)
        if checksums.is_file():
            allowed = checksums.read_text().split()
            if hashlib.sha256(data).hexdigest() not in allowed:
                raise ValueError(
                    f"{path}: damaged checkpoint: its sha256 is not the one written with it "
                    f"({CHECKSUM}); resume from an earlier copy or train again"
                )
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
            raise ValueError(
                f"{path}: damaged checkpoint ({type(error).__name__}: {str(error).splitlines()[0]})"
            ) from None

    def save_checkpoint(self, state: dict) -> None:
        """Writes checkpoint.pt and its checksum; a kill at any moment leaves a checkpoint
        that matches checkpoint.sha256 (the old one or the new one)."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        path, checksums = self.file(CHECKPOINT), self.file(CHECKSUM)
        previous = checksums.read_text().split()[-1:] if checksums.is_file() and path.is_file() else []
        write_text_atomic(checksums, "\n".join([*previous, digest]) + "\n")  # either file is valid meanwhile
        with atomic_open(path, "wb") as file:
            file.write(data)
        write_text_atomic(checksums, digest + "\n")

    def checkpoint_digest(self) -> str | None:
        """The sha256 of the checkpoint as written (checkpoint.sha256), or None (no checkpoint,
        or a run of an earlier version): it names the weights, wherever the run folder moves."""
        checksums = self.file(CHECKSUM)
        digests = checksums.read_text().split() if checksums.is_file() and self.file(CHECKPOINT).is_file() else []
        return digests[0] if len(digests) == 1 else None  # two: a save in progress

    def read_log(self) -> list[dict]:
        path = self.file(LOG)
        if not path.is_file():
            return []
        entries = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: damaged line {number}: {error.msg}") from None
        return entries

    def rewind_log(self, epoch: int) -> None:
        """Keep the log's lines of epochs up to `epoch` (0: an empty log), dropping any written
        after the checkpoint a run resumes from."""
        self._write_log([entry for entry in self.read_log() if entry["epoch"] <= epoch] if epoch else [])

    def append_log(self, entry: dict) -> None:
        self._write_log(self.read_log() + [entry])

    def _write_log(self, entries: list[dict]) -> None:
        write_text_atomic(self.file(LOG), "".join(json.dumps(entry) + "\n" for entry in entries))
        columns = list(dict.fromkeys(key for entry in entries for key in entry))
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(entries)
        write_text_atomic(self.file(LOG_CSV), text.getvalue())

    def metrics(self) -> dict:
        return read_json(self.file(METRICS))

    def write_metrics(self, metrics: dict) -> None:
        write_text_atomic(self.file(METRICS), json.dumps(metrics, indent=2) + "\n")

    def write_scores(self, ids: list[str], labels: np.ndarray, logits: np.ndarray, name: str = SCORES) -> Path:
        """The run's per-sample outputs (see save_scores)."""
        return save_scores(self.file(name), ids, labels, logits)


def config_changes(saved: dict, wanted: dict) -> list[str]:
    """The keys (a.b) whose values differ between two resolved configs, but for
    RESUMABLE_CHANGES; paths compared resolved (runs of earlier versions kept them relative)."""
    saved, wanted = flatten(absolute_paths(saved)), flatten(absolute_paths(wanted))
    return sorted(
        key
        for key in saved.keys() | wanted.keys()
        if saved.get(key) != wanted.get(key) and key not in RESUMABLE_CHANGES
    )


def check_outside_run(run: RunDirectory, scores_path: str | os.PathLike) -> None:
    """A scores file of other data than the run's test data goes outside the run's folder."""
    if run.path.resolve() in Path(scores_path).resolve().parents:
        raise ValueError(f"--scores {scores_path}: write other data's scores outside the run folder {run.path}")


def save_scores(path: str | os.PathLike, ids: list[str], labels, logits, run: RunDirectory | None = None) -> Path:
    """Per-sample outputs, written whole: ids (N,) str (stable across runs: file names), labels
    (N,) int64, logits (N, classes) float32 (a language model's: class-name log-likelihoods);
    a file outside its run names the run (its absolute path) and the sha256 of the checkpoint
    that scored them, so an ensemble can check that validation scores come from the weights it
    weighs (also after the run folder moved)."""
    path = Path(path)
    extra = {}
    if run is not None:
        extra["run"] = np.asarray(str(run.path.resolve()))
        digest = run.checkpoint_digest()
        if digest is not None:
            extra["checkpoint"] = np.asarray(digest)
    with atomic_open(path, "wb") as file:
        np.savez(
            file,
            ids=np.asarray(ids, dtype=str),
            labels=np.asarray(labels, dtype=np.int64),
            logits=np.asarray(logits, dtype=np.float32),
            **extra,
        )
    return path


def open_run(path: str | os.PathLike) -> RunDirectory:
    """The training run at `path`; a folder without config.yaml and checkpoint.pt is an error
    naming it."""
    run = RunDirectory(path)
    for name in (CONFIG, CHECKPOINT):
        if not run.file(name).is_file():
            raise ValueError(f"{run.path}: no {name}: not a skelang training run")
    return run
