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


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` (mode "w" for text, "wb" for bytes); when the
    block ends without an error it replaces `path`, otherwise it is deleted."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as file:
        file.write(text)


def torch_save_atomic(obj, path: str | os.PathLike) -> None:
    import torch

    with atomic_open(path, "wb") as file:
        torch.save(obj, file)
