"""Runs and files that never lose or silently corrupt work: the probes of a careful user, each
in a few seconds. Kills at chosen file events, flipped bytes in checkpoints and caches, two
processes on one run folder, a full disk, damaged JSON, and outputs over inputs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import skelang_cli

from skelang.data import cache
from skelang.data.inspect import convert_dataset
from skelang.data.synthetic import SyntheticSkeletons
from skelang.runs import RunDirectory, evaluate_run, train
from skelang.runs.directory import RunLockedError

SKELANG = [sys.executable, "-m", "skelang"]
TINY = {
    "seed": 3,
    "data": {"train": "synthetic:1:0", "test": "synthetic:1:1", "num_frames": 8, "num_workers": 0},
    "model": {"type": "stgcn", "channels": [8, 8], "strides": [1, 2]},
    "optim": {"warmup_epochs": 1, "milestones": [2]},
    "train": {"epochs": 3, "batch_size": 8},
}


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reliability") / "reference"
    train(TINY, out, progress=False)
    return out


def weights(run: Path) -> dict:
    return RunDirectory(run).load_checkpoint()["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def flip_byte(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x40
    path.write_bytes(bytes(data))


# --- kills --------------------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["checksum written", "checkpoint written", "log written"])
def test_a_kill_at_any_write_resumes_to_the_same_weights(event, tmp_path, monkeypatch, reference_run):
    """Killed in the middle of epoch 2's saves (between the checksum and the checkpoint, after
    the checkpoint, after the log line), the run resumes to the uninterrupted run's weights."""
    import skelang.runs.directory as directory

    real_write, real_append = directory.write_text_atomic, RunDirectory.append_log
    calls = {"n": 0}

    def write(path, text):
        if Path(path).name == "checkpoint.sha256":
            calls["n"] += 1
            if event == "checkpoint written" and calls["n"] == 4:  # epoch 2's checkpoint is in place,
                raise Killed  # its checksum file still lists the old and the new sum
        real_write(path, text)
        if event == "checksum written" and calls["n"] == 3:  # epoch 2: the pair written, old checkpoint
            raise Killed

    def append(run, entry):
        real_append(run, entry)
        if event == "log written" and entry["epoch"] == 2:
            raise Killed

    monkeypatch.setattr(directory, "write_text_atomic", write)
    monkeypatch.setattr(RunDirectory, "append_log", append)
    with pytest.raises(Killed):
        train(TINY, tmp_path / "run", progress=False)
    monkeypatch.undo()
    train(TINY, tmp_path / "run", resume=True, progress=False)
    assert same_weights(tmp_path / "run", reference_run)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2, 3]


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path, monkeypatch, reference_run):
    def killed(run, state):
        raise Killed

    monkeypatch.setattr(RunDirectory, "save_checkpoint", killed)
    with pytest.raises(Killed):
        train(TINY, tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert (tmp_path / "run" / "config.yaml").is_file() and not (tmp_path / "run" / "checkpoint.pt").exists()
    (tmp_path / "run" / ".checkpoint.pt.123.tmp").write_bytes(b"half")  # a killed write's leftover
    train(TINY, tmp_path / "run", resume=True, progress=False)  # --resume starts it again
    assert same_weights(tmp_path / "run", reference_run)
    assert not list((tmp_path / "run").glob(".*.tmp"))  # stale temporary files removed


# --- damaged files -----------------------------------------------------------------------------------


def test_a_flipped_byte_in_a_checkpoint_is_an_error_naming_it(tmp_path, reference_run):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    flip_byte(run / "checkpoint.pt", 2000)
    with pytest.raises(ValueError, match=r"checkpoint.pt: damaged checkpoint: its sha256"):
        evaluate_run(run)
    with pytest.raises(ValueError, match=r"checkpoint.pt: damaged checkpoint"):
        train({**TINY, "train": {**TINY["train"], "epochs": 4}}, run, resume=True, progress=False)
    result = skelang_cli("eval", run)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "damaged checkpoint" in result.stderr


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("metrics.json", "", r"metrics.json: damaged JSON at line 1"),
        ("config.yaml", "data: [unclosed\n", r"config.yaml: damaged YAML"),
        ("log.jsonl", '{"epoch": 1}\n{"epoch": 2, \n', r"log.jsonl: damaged line 2"),
    ],
)
def test_damaged_run_files_name_the_file_and_line(name, content, message, tmp_path, reference_run):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    (run / name).write_text(content)
    longer = {**TINY, "train": {**TINY["train"], "epochs": 4}}  # the log is read when the run goes on
    with pytest.raises(ValueError, match=message):
        train(longer if name == "log.jsonl" else TINY, run, resume=True, progress=False)


def test_a_damaged_cache_index_or_array_is_refused(tmp_path):
    folder = cache.write_cache(list(SyntheticSkeletons(samples_per_class=1)), tmp_path / "c")
    index = json.loads((folder / "index.json").read_text())
    index["layout"] = "kinect_v1_20"  # an edited index: outside the arrays, inside the checksum now
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="checksum mismatch"):
        cache.SequenceCache(folder)
    (folder / "labels.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"labels.npy: damaged cache array"):
        cache.SequenceCache(folder, verify=False)


def test_a_garbage_npz_is_an_error_naming_it(tmp_path):
    from skelang.data.readers import open_sequences

    bad = tmp_path / "x.npz"
    bad.write_bytes(b"PK not really a zip")
    with pytest.raises(ValueError, match=r"x.npz: not a .npy or .npz file"):
        open_sequences(bad)


# --- two processes ------------------------------------------------------------------------------------


def test_a_forked_worker_does_not_keep_the_run_held(tmp_path):
    """A DataLoader worker forked while the run is held must not hold it after its parent let
    go (or died): the worker closes its copy of the lock at once."""
    started, ready = os.pipe()
    with RunDirectory(tmp_path / "run").lock():
        worker = os.fork()
        if worker == 0:  # fork's handlers in the child have run when os.fork returns here
            os.write(ready, b"x")
            time.sleep(30)
            os._exit(0)
        assert os.read(started, 1) == b"x"
    os.close(started)
    os.close(ready)
    try:
        with RunDirectory(tmp_path / "run").lock():  # RunLockedError if the worker still held it
            pass
    finally:
        os.kill(worker, 9)
        os.waitpid(worker, 0)


def test_a_run_folder_is_held_by_one_process(tmp_path, reference_run):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from skelang.runs import RunDirectory\n"
            "with RunDirectory(sys.argv[1]).lock():\n print('held', flush=True); time.sleep(60)",
            str(run),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for attempt in (
            lambda: train(TINY, run, resume=True, progress=False),
            lambda: evaluate_run(run),
            lambda: train(TINY, tmp_path / "run", progress=False),
        ):
            with pytest.raises(RunLockedError, match=rf"in use by another skelang process \(pid {holder.pid}\)"):
                attempt()
    finally:
        holder.kill()
        holder.wait()
    assert train(TINY, run, resume=True, progress=False)["top1"] is not None  # free again


def test_two_trainings_started_together_do_not_share_a_folder(tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    import yaml

    config.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 2}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*SKELANG, "train", "--config", str(config), "--out", str(out)]
    first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    time.sleep(0.05)
    second = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    results = [(p.wait(timeout=120), p.stderr.read()) for p in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results  # one trains, the other is refused
    refused = next(err for code, err in results if code == 1)
    assert "in use by another skelang process" in refused or "already holds a run" in refused
    log = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2]


# --- disks and outputs -----------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, reference_run):
    import skelang.files as files

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    before = (run / "checkpoint.pt").read_bytes()
    real_fdopen = os.fdopen

    def full(fd, mode, **kwargs):
        handle = real_fdopen(fd, mode, **kwargs)
        if "b" in mode:
            handle.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return handle

    monkeypatch.setattr(files.os, "fdopen", full)
    with pytest.raises(OSError, match=r"checkpoint.pt: cannot write: No space left on device; free some disk space"):
        RunDirectory(run).save_checkpoint({"epoch": 9})
    monkeypatch.undo()
    assert (run / "checkpoint.pt").read_bytes() == before
    assert RunDirectory(run).load_checkpoint()["epoch"] == 3  # still verified against its checksum
    assert not list(run.glob(".*.tmp"))


def test_convert_never_destroys_what_is_at_out(tmp_path):
    source = "synthetic:1:0"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is a folder that is not a skelang cache: choose a new folder"):
        convert_dataset(source, other, progress=False, force=True)
    assert (other / "notes.txt").read_text() == "keep me"
    plain = tmp_path / "plain.txt"
    plain.write_text("keep me too")
    with pytest.raises(ValueError, match="is a file"):
        convert_dataset(source, plain, progress=False)
    assert plain.read_text() == "keep me too"
    made = convert_dataset(source, tmp_path / "cache", progress=False)["cache"]
    with pytest.raises(ValueError, match="holds a skelang cache already: pass --force"):
        convert_dataset(source, made, progress=False)
    convert_dataset(source, made, progress=False, force=True)
    with pytest.raises(ValueError, match="the output would replace the input"):
        convert_dataset(made, made, progress=False, force=True)
    with pytest.raises(ValueError, match="the output would replace the input"):
        convert_dataset(made, tmp_path, progress=False, force=True)
    with pytest.raises(ValueError, match="nope.json: no such file or folder"):
        convert_dataset(tmp_path / "nope.json", tmp_path / "nope.json", progress=False)
    with pytest.raises(ValueError, match="inside the input folder .* choose a folder outside it"):
        convert_dataset(made, Path(made) / "sub", progress=False)
    assert not (Path(made) / "sub").exists()
    result = skelang_cli("data", "convert", source, "--out", other)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "not a skelang cache" in result.stderr


def test_a_training_never_writes_into_a_folder_with_other_files(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "paper.tex").write_text("x")
    with pytest.raises(ValueError, match=r"is not empty \(paper.tex\): choose a new folder"):
        train(TINY, out, progress=False)
    assert (out / "paper.tex").read_text() == "x"
    assert sorted(p.name for p in out.iterdir()) == ["paper.tex"]  # not even the lock file


def test_a_training_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path):
    out = tmp_path / "new" / "run"
    bad = {**TINY, "data": {**TINY["data"], "train": str(tmp_path / "nope_train")}}
    with pytest.raises(ValueError, match="nope_train"):
        train(bad, out, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the run folder nor the parent it made
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="nope_train"):
        train(bad, empty, progress=False)
    assert list(empty.iterdir()) == []  # nor its config.yaml and lock file in a folder that was there
    train(TINY, out, progress=False)  # the same folder trains afterwards
    assert (out / "checkpoint.pt").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_and_caches_follow_the_umask(tmp_path, umask):
    """Files written whole (through a private temporary file) and caches (a private temporary
    folder) end with the permissions open() and mkdir() would give them, not 0600 and 0700."""
    from skelang.files import write_text_atomic

    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "a.txt", "text")
        folder = convert_dataset("synthetic:2:0", tmp_path / "cache", progress=False)["cache"]
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert Path(folder).stat().st_mode & 0o777 == 0o777 & ~umask
    assert all(file.stat().st_mode & 0o777 == 0o666 & ~umask for file in Path(folder).iterdir())
