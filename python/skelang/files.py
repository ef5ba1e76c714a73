"""Files written whole or not at all: the content goes to a temporary file beside the
target, then os.replace moves it into place, so a reader (or a run killed mid-write)
sees the old file or the complete new one, never half of it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    """The process's umask, as Linux reports it in /proc/self/status; elsewhere read by setting
    it for an instant (to 0o077, so that a file another thread makes meanwhile is private)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)  # the most private value while it is read back
    os.umask(mask)
    return mask


def new_file_mode(directory: bool = False) -> int:
    """The permissions open() gives a new file (0o666) or mkdir() a new folder (0o777) under
    the process's umask: tempfile.mkstemp and mkdtemp make theirs private (0o600, 0o700), and
    a file moved into place keeps them."""
    return (0o777 if directory else 0o666) & ~_umask()


def share_as_new(path_or_descriptor, directory: bool = False) -> None:
    """Gives a file (a path or an open descriptor) or folder made private by tempfile the
    permissions of a new one; where the file system keeps no permissions (FAT, some network
    mounts refuse chmod) it stays as it is."""
    with contextlib.suppress(OSError):
        if isinstance(path_or_descriptor, int):
            os.fchmod(path_or_descriptor, new_file_mode(directory))
        else:
            os.chmod(path_or_descriptor, new_file_mode(directory))


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` (mode "w" for text, "wb" for bytes); when the
    block ends without an error it replaces `path`, otherwise it is deleted."""
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _naming(error, path) from None
    try:
        share_as_new(handle)
        with os.fdopen(handle, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise _naming(error, path) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _naming(error: OSError, path: Path) -> OSError:
    """The error as one line naming the file, with the remedy for a full disk or a
    read-only folder; the file written before is left as it was."""
    remedy = {
        28: "free some disk space (or write elsewhere) and run again",
        13: "write somewhere you may write",
        30: "write somewhere you may write",
    }.get(error.errno, "")
    return OSError(
        error.errno,
        f"{path}: cannot write: {error.strerror or error}"
        + (f"; {remedy}; the previous file is unchanged" if remedy else ""),
    )


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as file:
        file.write(text)


def torch_save_atomic(obj, path: str | os.PathLike) -> None:
    import torch

    with atomic_open(path, "wb") as file:
        torch.save(obj, file)
