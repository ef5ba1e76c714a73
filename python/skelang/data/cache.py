"""A compact on-disk cache of converted sequences: a folder that loads in seconds.

    frames.npy   (sum of T, C, V, M) float32: every sequence's frames, one after another
    offsets.npy  (N + 1,) int64: sequence i is frames[offsets[i]:offsets[i + 1]]
    labels.npy   (N,) int64, -1 where unknown
    index.json   format, layout, meta of each sequence, the class names (when the labels
                 were names), and the sha256 of the three arrays and of the index itself

The folder is written under a temporary name and renamed into place, so a cache is
either complete or absent; loading checks the checksum and maps the frames from disk.
Caches of format skelang-cache-1 (their checksum covers the arrays only) still open.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from skelang.data.layouts import ensure_layout, layout_to_dict
from skelang.data.sequence import Sequence
from skelang.files import share_as_new

FORMAT = "skelang-cache-2"
FORMATS = ("skelang-cache-1", FORMAT)
ARRAYS = ("frames.npy", "offsets.npy", "labels.npy")


def _checksum(folder: Path, index: dict | None = None) -> str:
    """sha256 of the three arrays and (format 2) of the index's keys other than sha256."""
    digest = hashlib.sha256()
    for name in ARRAYS:
        with open(folder / name, "rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
    if index is not None:
        digest.update(json.dumps({k: v for k, v in index.items() if k != "sha256"}, sort_keys=True).encode())
    return digest.hexdigest()


def check_cache_destination(folder: str | Path, overwrite: bool = False) -> None:
    """A cache may be written to `folder` when it does not exist, is an empty folder, or (with
    `overwrite`) holds a skelang cache; anything else is a ValueError naming it, and is never
    replaced."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        return
    if is_cache(folder) and not folder.is_symlink():
        if not overwrite:
            raise ValueError(f"{folder} holds a skelang cache already: pass --force (overwrite=True) to replace it")
        return
    kind = "a file" if folder.is_file() else "a link" if folder.is_symlink() else "a folder that is not a skelang cache"
    raise ValueError(f"{folder} exists and is {kind}: choose a new folder for the cache (it is never replaced)")


def write_cache(sequences: Iterable[Sequence], folder: str | Path, overwrite: bool = False) -> Path:
    """Write sequences (all of one layout and channel count) to `folder` atomically. An
    existing `folder` must be empty or (with `overwrite`) a skelang cache (see
    check_cache_destination)."""
    folder = Path(folder)
    check_cache_destination(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        share_as_new(work, directory=True)  # mkdtemp's folder is private
        frames_path = work / "frames.raw"
        offsets, labels, metas = [0], [], []
        layout = shape = class_names = None
        with open(frames_path, "wb") as frames:
            for sequence in sequences:
                C, T, V, M = sequence.data.shape
                if layout is None:
                    layout, shape = sequence.layout, (C, V, M)
                if (sequence.layout, (C, V, M)) != (layout, shape):
                    raise ValueError(
                        f"{sequence.meta.get('source', 'a sequence')}: layout {sequence.layout} "
                        f"with (C, V, M) = {(C, V, M)} differs from the cache's {layout} {shape}"
                    )
                frames.write(np.ascontiguousarray(sequence.data.transpose(1, 0, 2, 3), dtype=np.float32).tobytes())
                offsets.append(offsets[-1] + T)
                labels.append(-1 if sequence.label is None else sequence.label)
                meta = dict(sequence.meta)
                names = meta.pop("class_names", None)  # kept once, in the index
                if names is not None:
                    if class_names is not None and list(names) != class_names:
                        raise ValueError(
                            f"{meta.get('source', 'a sequence')}: class names {list(names)[:5]} "
                            f"differ from the other sequences' {class_names[:5]}"
                        )
                    class_names = list(names)
                metas.append(meta)
        if layout is None:
            raise ValueError(f"{folder}: no sequence to cache")
        raw = np.memmap(frames_path, dtype=np.float32, mode="r", shape=(offsets[-1], *shape))
        np.save(work / "frames.npy", raw)
        del raw
        frames_path.unlink()
        np.save(work / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        np.save(work / "labels.npy", np.asarray(labels, dtype=np.int64))
        index = {
            "format": FORMAT,
            "layout": layout,
            "layout_definition": layout_to_dict(layout),  # a layout made at run time opens anywhere
            "num_sequences": len(labels),
            "meta": metas,
        }
        if class_names is not None:
            index["class_names"] = class_names
        index["sha256"] = _checksum(work, json.loads(json.dumps(index)))  # as it will read back
        (work / "index.json").write_text(json.dumps(index))
        check_cache_destination(folder, overwrite)  # again: the sequences may have taken a while
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old / "cache")
            os.replace(work, folder)
            shutil.rmtree(old)
        else:
            os.replace(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return folder


def is_cache(folder: str | Path) -> bool:
    return (Path(folder) / "index.json").is_file()


class SequenceCache:
    """Random access to a cache written by write_cache; item i is a Sequence."""

    def __init__(self, folder: str | Path, verify: bool = True):
        self.folder = Path(folder)
        index_path = self.folder / "index.json"
        try:
            index = json.loads(index_path.read_text())
        except FileNotFoundError:
            raise ValueError(
                f"{self.folder}: not a skelang cache (no index.json); make one with `skelang data convert`"
            ) from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{index_path}:{error.lineno}: corrupt cache index: {error.msg}") from None
        if not isinstance(index, dict) or index.get("format") not in FORMATS:
            got = index.get("format") if isinstance(index, dict) else type(index).__name__
            raise ValueError(f"{index_path}: cache format {got!r}, expected {FORMAT!r}")
        missing = [key for key in ("layout", "layout_definition", "meta", "sha256") if key not in index]
        if missing:
            raise ValueError(f"{index_path}: damaged cache index: no {', '.join(missing)}")
        covered = index if index["format"] == FORMAT else None
        for name in ARRAYS:
            if not (self.folder / name).is_file():
                raise ValueError(f"{self.folder}: damaged cache: no {name}; convert the data again")
        if verify and _checksum(self.folder, covered) != index["sha256"]:
            raise ValueError(
                f"{self.folder}: checksum mismatch: the cache was modified or is damaged; convert the data again"
            )
        self.layout = index["layout"]
        ensure_layout(index["layout_definition"])
        self.meta = index["meta"]
        self.class_names = index.get("class_names")  # when the labels were class names
        self.frames = self._array("frames.npy", mmap_mode="r")
        self.offsets = self._array("offsets.npy")
        self.labels = self._array("labels.npy")
        if len(self.offsets) != len(self.labels) + 1 or len(self.meta) != len(self.labels):
            raise ValueError(
                f"{self.folder}: damaged cache: {len(self.labels)} labels, {len(self.offsets)} offsets "
                f"and {len(self.meta)} metadata entries"
            )

    def _array(self, name: str, **options) -> np.ndarray:
        try:
            return np.load(self.folder / name, allow_pickle=False, **options)
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(f"{self.folder / name}: damaged cache array ({error})") from None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Sequence:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} of a cache of {len(self)}")
        i %= len(self)
        block = self.frames[self.offsets[i] : self.offsets[i + 1]]  # (T, C, V, M)
        label = int(self.labels[i])
        return Sequence(
            data=np.ascontiguousarray(block.transpose(1, 0, 2, 3)),
            layout=self.layout,
            label=None if label < 0 else label,
            meta=self.meta[i] if self.class_names is None else {**self.meta[i], "class_names": self.class_names},
        )
