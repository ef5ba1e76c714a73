"""A compact on-disk cache of converted sequences: a folder that loads in seconds.

    frames.npy   (sum of T, C, V, M) float32: every sequence's frames, one after another
    offsets.npy  (N + 1,) int64: sequence i is frames[offsets[i]:offsets[i + 1]]
    labels.npy   (N,) int64, -1 where unknown
    index.json   format, layout, meta of each sequence, and the sha256 of the three arrays

The folder is written under a temporary name and renamed into place, so a cache is
either complete or absent; loading checks the checksum and maps the frames from disk.
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

from skelang.data.layouts import get_layout, layout_from_dict, layout_names, register_layout
from skelang.data.sequence import Sequence

FORMAT = "skelang-cache-1"
ARRAYS = ("frames.npy", "offsets.npy", "labels.npy")


def _checksum(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ARRAYS:
        with open(folder / name, "rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()


def write_cache(sequences: Iterable[Sequence], folder: str | Path) -> Path:
    """Write sequences (all of one layout and channel count) to `folder` atomically."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        frames_path = work / "frames.raw"
        offsets, labels, metas = [0], [], []
        layout = shape = None
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
                metas.append(sequence.meta)
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
            "layout_definition": _layout_definition(layout),
            "num_sequences": len(labels),
            "meta": metas,
            "sha256": _checksum(work),
        }
        (work / "index.json").write_text(json.dumps(index))
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


def _layout_definition(name: str) -> dict:
    """The layout as layout_from_dict reads it, so a cache of a layout made at run time
    (a BVH hierarchy, a user's) opens in any process."""
    layout = get_layout(name)
    return {
        "name": layout.name,
        "joints": list(layout.joint_names),
        "parents": list(layout.parents),
        "centre": layout.centre,
        "spine": list(layout.spine),
        "shoulders": list(layout.shoulders),
        "left_right": [list(pair) for pair in layout.left_right],
        "description": layout.description,
    }


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
        if index.get("format") != FORMAT:
            raise ValueError(f"{index_path}: cache format {index.get('format')!r}, expected {FORMAT!r}")
        if verify and _checksum(self.folder) != index["sha256"]:
            raise ValueError(
                f"{self.folder}: checksum mismatch: the cache was modified or is damaged; convert the data again"
            )
        self.layout = index["layout"]
        if self.layout not in layout_names():
            register_layout(layout_from_dict(index["layout_definition"]))
        self.meta = index["meta"]
        self.frames = np.load(self.folder / "frames.npy", mmap_mode="r")
        self.offsets = np.load(self.folder / "offsets.npy")
        self.labels = np.load(self.folder / "labels.npy")

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
            meta=self.meta[i],
        )
