"""Preprocessing of one sequence: the geometry runs in C++ with Eigen (skelang._C), the
random choices are drawn here from a numpy Generator, so a pipeline is deterministic under
its seed. skelang.reference.preprocess holds pure-numpy twins of the C++ functions.

The six input streams (`STREAMS`), each (C, T, V, M) like the joints:
    joint           joint coordinates
    bone            joint minus its parent joint (zero at the root)
    joint_motion    joint at t+1 minus joint at t (zero at the last frame)
    bone_motion     bone at t+1 minus bone at t
    joint_local     joint minus the layout's centre joint of the same body and frame:
                    the pose without the body's global movement
    bone_direction  bone divided by its length: the unit direction of each bone, free of
                    body size (the angle features of the six-stream ensembles)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from skelang import _C
from skelang.data.layouts import get_layout
from skelang.data.sequence import Sequence

STREAMS = ("joint", "bone", "joint_motion", "bone_motion", "joint_local", "bone_direction")


def _with_data(sequence: Sequence, data: np.ndarray, **meta) -> Sequence:
    return Sequence(data=data, layout=sequence.layout, label=sequence.label, meta={**sequence.meta, **meta})


def drop_empty_frames(sequence: Sequence) -> Sequence:
    """Frames in which no body is present are removed (a sequence with none keeps one frame)."""
    frames = _C.present_frames(sequence.data)
    if len(frames) == sequence.num_frames:
        return sequence
    if len(frames) == 0:
        frames = np.array([0])
    return _with_data(sequence, np.ascontiguousarray(sequence.data[:, frames]))


def coordinates(sequence: Sequence) -> int:
    """3 for x y z data, 2 for x y score data (2D pose estimates: meta["coordinates"] == "xy")."""
    return 2 if sequence.meta.get("coordinates") == "xy" else 3


def normalize(sequence: Sequence, rotate: bool = True, scale: bool = False) -> Sequence:
    """Centre on the layout's centre joint (body 0, first frame), rotate to the canonical
    body frame (y along the spine, x from the right to the left shoulder; 3D data only), and
    with `scale` make body 0's mean spine length 1."""
    layout = get_layout(sequence.layout)
    data, _ = _C.normalize_skeleton(
        sequence.data, layout.centre, *layout.spine, *layout.shoulders, rotate, scale, coordinates(sequence)
    )
    return _with_data(sequence, data)


def resample(sequence: Sequence, num_frames: int, start: float = 0.0, length: float | None = None) -> Sequence:
    """`num_frames` frames spread evenly over frames [start, start + length) (by default the
    whole sequence), linearly interpolated."""
    T = sequence.num_frames
    length = T if length is None else length
    step = (length - 1) / (num_frames - 1) if num_frames > 1 else 0.0
    return _with_data(sequence, _C.resample_frames(sequence.data, start, step, num_frames, coordinates(sequence)))


def select_frames(sequence: Sequence, frames: np.ndarray) -> Sequence:
    """The frames of `sequence` at the integer indices `frames`, in that order (no blending)."""
    return _with_data(sequence, np.ascontiguousarray(sequence.data[:, frames]))


def crop_window(T: int, rng: np.random.Generator, ratio: tuple[float, float] = (0.5, 1.0)) -> tuple[int, int]:
    """(start, length) of a random window holding a fraction in `ratio` of T frames."""
    length = max(1, min(T, round(T * rng.uniform(*ratio))))
    return int(rng.integers(0, T - length + 1)), length


def random_crop_resize(
    sequence: Sequence, num_frames: int, rng: np.random.Generator, ratio: tuple[float, float] = (0.5, 1.0)
) -> Sequence:
    """Training-time temporal crop as CTR-GCN does: keep a random fraction in `ratio` of the
    frames at a random start, then resample it to `num_frames`."""
    start, length = crop_window(sequence.num_frames, rng, ratio)
    return resample(sequence, num_frames, start, length)


def centre_crop_resize(sequence: Sequence, num_frames: int, ratio: float = 1.0) -> Sequence:
    """Evaluation-time crop: the central `ratio` of the frames, resampled to `num_frames`."""
    T = sequence.num_frames
    length = max(1, min(T, round(T * ratio)))
    return resample(sequence, num_frames, (T - length) // 2, length)


def random_frame_indices(T: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """`num_frames` sorted frame indices drawn uniformly from [0, T) with replacement: the
    random choice of CTR-GCN's NW-UCLA feeder (random.sample of the indices repeated 100
    times, sorted)."""
    return np.sort(rng.integers(0, T, num_frames))


def even_frame_indices(T: int, num_frames: int) -> np.ndarray:
    """`num_frames` evenly spaced frame indices floor(linspace(0, T - 1)): CTR-GCN's NW-UCLA
    test sampling."""
    return np.linspace(0, T - 1, num_frames).astype(np.int64)


def minmax_scale(sequence: Sequence) -> Sequence:
    """Each coordinate mapped onto [-1, 1] by its minimum and maximum over the whole sequence
    (present bodies, detected joints), as CTR-GCN's NW-UCLA feeder normalises; it makes the
    input independent of the body's size and distance."""
    return _with_data(sequence, _C.minmax_scale(sequence.data, coordinates(sequence)))


def stream(sequence: Sequence, name: str) -> np.ndarray:
    """One of STREAMS, (C, T, V, M) float32."""
    layout = get_layout(sequence.layout)
    return _C.compute_stream(sequence.data, name, list(layout.parents), layout.centre, coordinates(sequence))


@dataclasses.dataclass
class Augmentation:
    """Random spatial augmentations for training; each 0 switches one off."""

    rotation_degrees: float | tuple[float, float, float] = 0.0  # uniform in +-this about each
    # axis, or +-(x, y, z) degrees about x, y and z
    scale: float = 0.0  # factor uniform in [1 - scale, 1 + scale], drawn per axis
    isotropic_scale: bool = False  # or one factor for all axes (CTR-GCN's NW-UCLA view transform)
    shear: float = 0.0  # off-diagonal shear entries uniform in +-this
    joint_dropout: float = 0.0  # probability that a joint is zeroed for the whole sequence

    def matrix(self, rng: np.random.Generator) -> np.ndarray:
        """The random 3 x 3 linear map: rotation @ scale @ shear."""
        limits = np.broadcast_to(np.asarray(self.rotation_degrees, dtype=np.float64), (3,))
        angles = np.radians(rng.uniform(-limits, limits))
        rotation = np.eye(3)
        for axis, angle in enumerate(angles):
            c, s = math.cos(angle), math.sin(angle)
            i, j = [k for k in range(3) if k != axis]
            r = np.eye(3)
            r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
            rotation = r @ rotation
        factors = rng.uniform(1 - self.scale, 1 + self.scale, 1 if self.isotropic_scale else 3)
        scaling = np.diag(np.broadcast_to(factors, (3,)))
        shearing = np.eye(3) + (rng.uniform(-self.shear, self.shear, (3, 3)) * (1 - np.eye(3)))
        return (rotation @ scaling @ shearing).astype(np.float32)

    def __call__(self, sequence: Sequence, rng: np.random.Generator) -> Sequence:
        matrix = self.matrix(rng)
        if coordinates(sequence) == 2:  # x y score: transform the image plane, keep the score
            matrix[2, :], matrix[:, 2] = 0.0, 0.0
            matrix[2, 2] = 1.0
        data = _C.apply_linear_transform(sequence.data, matrix)
        if self.joint_dropout > 0:
            dropped = rng.random(data.shape[2]) < self.joint_dropout
            data[:, :, dropped] = 0.0
        return _with_data(sequence, data)


SAMPLINGS = ("interpolate", "index")


@dataclasses.dataclass
class Preprocess:
    """The whole path from a read Sequence to a model input (C * len(streams), T, V, M).

    Drop empty frames, normalise (centre, rotate, scale), in training (`rng` given) draw the
    frames and apply `augmentation`, with `minmax` map each coordinate onto [-1, 1] over the
    whole sequence, take `num_frames` frames, and compute the streams. Frame sampling:
    "interpolate" takes a random crop (`train_crop` fractions) in training and the central
    `eval_crop` at evaluation, resampled by linear interpolation; "index" takes sorted
    random frame indices in training and evenly spaced ones at evaluation (CTR-GCN's
    NW-UCLA feeder). Every step can be switched off for ablations.
    """

    num_frames: int = 64
    normalize: bool = True
    rotate: bool = True
    scale: bool = False
    minmax: bool = False
    sampling: str = "interpolate"
    train_crop: tuple[float, float] = (0.5, 1.0)
    eval_crop: float = 1.0
    streams: tuple[str, ...] = ("joint",)
    augmentation: Augmentation = dataclasses.field(default_factory=Augmentation)

    def __post_init__(self):
        unknown = [s for s in self.streams if s not in STREAMS]
        if unknown or not self.streams:
            raise ValueError(f"Preprocess.streams: unknown or no stream {unknown}; known: {', '.join(STREAMS)}")
        if self.num_frames < 1:
            raise ValueError(f"Preprocess.num_frames must be positive, got {self.num_frames}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"Preprocess.sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")

    def _frames(self, T: int, rng: np.random.Generator | None):
        """The frame sampling of a T-frame sequence as a function of the sequence; the random
        draws happen here, before the augmentation's."""
        if self.sampling == "index":
            indices = (
                even_frame_indices(T, self.num_frames) if rng is None else random_frame_indices(T, self.num_frames, rng)
            )
            return lambda sequence: select_frames(sequence, indices)
        if rng is None:
            return lambda sequence: centre_crop_resize(sequence, self.num_frames, self.eval_crop)
        start, length = crop_window(T, rng, self.train_crop)
        return lambda sequence: resample(sequence, self.num_frames, start, length)

    def __call__(self, sequence: Sequence, rng: np.random.Generator | None = None) -> np.ndarray:
        sequence = drop_empty_frames(sequence)
        if self.normalize:
            sequence = normalize(sequence, rotate=self.rotate, scale=self.scale)
        sample_frames = self._frames(sequence.num_frames, rng)
        if self.minmax:  # over the whole sequence, after the augmentation (as CTR-GCN)
            if rng is not None:
                sequence = self.augmentation(sequence, rng)
            sequence = sample_frames(minmax_scale(sequence))
        else:  # augmenting the sampled frames only is cheaper; the linear maps commute
            sequence = sample_frames(sequence)
            if rng is not None:
                sequence = self.augmentation(sequence, rng)
        return np.concatenate([stream(sequence, name) for name in self.streams], axis=0)
