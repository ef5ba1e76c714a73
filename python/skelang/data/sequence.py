"""The one representation every reader produces."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

# The largest magnitude a float32 holds; a reader's value beyond it would become infinite.
FLOAT32_MAX = float(np.finfo(np.float32).max)
BEYOND_FLOAT32 = f"NaN, infinite values or values beyond float32's range (+-{FLOAT32_MAX:.2g})"


def is_real_array(array: np.ndarray) -> bool:
    """Whether `array` holds real numbers (integers or floats; not complex, bool or objects)."""
    return np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)


def within_float32(array: np.ndarray) -> np.ndarray:
    """Per element of a real array: whether float32 holds it as a finite number (False for
    NaN, infinities and magnitudes beyond FLOAT32_MAX, which a cast would make infinite)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.abs(array) <= FLOAT32_MAX


def is_float32_number(value) -> bool:
    """Whether a parsed number (a JSON int or float, not a bool) fits a float32 as a finite
    number; integers of any size are compared exactly, never converted first."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= FLOAT32_MAX


def data_files(folder: Path, suffix: str, nested: bool = False) -> list[Path]:
    """The files of `folder` whose name ends in `suffix` in any case (".bvh" finds a.bvh and
    B.BVH, as Windows tools and cameras write them), sorted; `nested` looks one folder down
    instead (clips in class-named folders)."""
    pattern = "*/*" if nested else "*"
    return sorted(file for file in folder.glob(pattern) if file.suffix.lower() == suffix and file.is_file())


def value_or_error(read, *args):
    """read(*args), or the ValueError it raised: a bad file or entry is listed, the others read."""
    try:
        return read(*args)
    except ValueError as error:
        return error


class MissingSkeletonError(ValueError):
    """A clip in which nobody was recorded or detected: an NTU file whose frames hold no body,
    a Kinetics-skeleton clip without people, a PYSKL annotation without keypoints. Every
    reader raises (or yields) it the same way, and the standard protocols leave such samples
    out (NTU lists them in samples_with_missing_skeletons.txt): `data inspect` and
    `data convert` report and skip them with a count."""


@dataclasses.dataclass
class Sequence:
    """One skeleton sequence.

    data:   (C, T, V, M) float32: C coordinates (3 for x, y, z; 2D formats add a confidence
            channel: x, y, score), T frames, V joints of `layout`, M bodies (absent bodies
            and frames are zeros).
    layout: name of a registered SkeletonLayout (skelang.data.layouts).
    label:  0-based class index, or None when unknown.
    meta:   where it came from and what the benchmarks need: "source" (file path), and as
            available "subject", "camera"/"view", "setup", "replication", "name" ...;
            "coordinates": "xy" marks 2D data whose channels are x, y, score.
    """

    data: np.ndarray
    layout: str
    label: int | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.data.ndim != 4:
            raise ValueError(
                f"Sequence data must be (C, T, V, M), got shape {self.data.shape}"
                f" ({self.meta.get('source', 'unknown source')})"
            )

    @property
    def num_frames(self) -> int:
        return self.data.shape[1]

    @property
    def num_bodies(self) -> int:
        """Bodies with at least one non-zero coordinate."""
        return int(np.count_nonzero(np.abs(self.data).reshape(-1, self.data.shape[3]).sum(0)))

    def sample_id(self, position: int) -> str:
        """An id stable across runs and machines (for matching per-sample scores): the sample's
        name (file name), else its source and index (`position` in its dataset when the
        metadata has no index)."""
        if self.meta.get("name"):
            return str(self.meta["name"])
        return f"{self.meta.get('source', 'sample')}#{self.meta.get('index', position)}"
