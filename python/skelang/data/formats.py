"""Readers for the array formats other code bases store skeletons in.

    read_pyskl(path)          PYSKL annotation pickles (2D or 3D keypoints)
    read_ctrgcn_npz(path)     CTR-GCN's NTU / NW-UCLA .npz files (x_train, y_train, x_test, y_test)
    read_kinetics_json(path)  Kinetics-skeleton JSON as ST-GCN stores it (OpenPose, 18 joints)
    iter_kinetics(folder)     every Kinetics-skeleton file of a folder
    from_array(array, layout) an in-memory (N, C, T, V, M) array in any dimension order
    read_array_file(path)     such an array from a .npy or .npz file (never unpickled)

Every reader returns Sequences (C, T, V, M) float32; errors are ValueErrors naming the file
and, where it applies, the sample or frame.
"""

from __future__ import annotations

import math
import numbers
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from skelang.data.json_text import parse_json
from skelang.data.layouts import get_layout
from skelang.data.ntu import parse_ntu_name
from skelang.data.safe_pickle import load_pickle
from skelang.data.sequence import Sequence

# The layout a joint count stands for when a file does not name its skeleton.
LAYOUT_BY_JOINTS = {25: "ntu25", 17: "coco17", 18: "openpose18", 20: "kinect_v1_20", 33: "blazepose33", 15: "jhmdb15"}


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _ntu_fields(name: str) -> dict:
    """Setup, camera, subject, ... when `name` is an NTU sample name, else nothing."""
    try:
        return parse_ntu_name(name)
    except ValueError:
        return {}


# ---------------------------------------------------------------------------------------
# PYSKL


def _pyskl_sequence(annotation, index: int, layout: str | None, source: str) -> Sequence:
    """One PYSKL annotation dict: keypoint (M, T, V, C), optional keypoint_score (M, T, V)."""
    if not isinstance(annotation, dict):
        raise ValueError(f"{source}: annotation {index}: expected a dict, got {type(annotation).__name__}")
    where = f"{source}: annotation {index} ({annotation.get('frame_dir', 'no frame_dir')!r})"
    missing = [key for key in ("frame_dir", "label", "keypoint") if key not in annotation]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
    if not isinstance(annotation["frame_dir"], str):
        raise ValueError(f"{where}: 'frame_dir' must be a string")
    label = annotation["label"]
    if not _is_integer(label) or label < 0:
        raise ValueError(f"{where}: 'label' must be a non-negative integer, got {label!r}")
    try:
        keypoint = np.asarray(annotation["keypoint"])
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{where}: 'keypoint' is not an array: {error}") from None
    if keypoint.ndim != 4 or keypoint.shape[3] not in (2, 3) or not np.issubdtype(keypoint.dtype, np.number):
        raise ValueError(
            f"{where}: 'keypoint' must be a numeric (M, T, V, C) array with C = 2 or 3, "
            f"got shape {keypoint.shape} ({keypoint.dtype})"
        )
    M, T, V, C = keypoint.shape
    if "total_frames" in annotation and annotation["total_frames"] != T:
        raise ValueError(f"{where}: 'total_frames' is {annotation['total_frames']!r} but 'keypoint' has {T} frames")
    if not np.isfinite(keypoint).all():
        raise ValueError(f"{where}: 'keypoint' holds NaN or infinite values")
    if C == 2:
        if "keypoint_score" in annotation:
            score = np.asarray(annotation["keypoint_score"])
            if score.shape != (M, T, V) or not np.issubdtype(score.dtype, np.number):
                raise ValueError(
                    f"{where}: 'keypoint_score' must be numeric of shape {(M, T, V)} "
                    f"(as 'keypoint' minus C), got {score.shape} ({score.dtype})"
                )
            if not np.isfinite(score).all():
                raise ValueError(f"{where}: 'keypoint_score' holds NaN or infinite values")
        else:  # detected joints are certain; zero-padded (absent) ones stay zero
            score = np.any(keypoint != 0, axis=3)
        keypoint = np.concatenate([keypoint, score[..., None].astype(keypoint.dtype)], axis=3)
    if layout is None:
        if V not in LAYOUT_BY_JOINTS:
            raise ValueError(f"{where}: cannot tell the skeleton layout from {V} joints; pass layout=")
        layout = LAYOUT_BY_JOINTS[V]
    elif get_layout(layout).num_joints != V:
        raise ValueError(f"{where}: {V} joints, but layout {layout!r} has {get_layout(layout).num_joints}")
    frame_dir = annotation["frame_dir"]
    meta = {"source": source, "name": frame_dir, **_ntu_fields(frame_dir)}
    if C == 2:
        meta["coordinates"] = "xy"  # channels x, y, score
    if "img_shape" in annotation:
        meta["img_shape"] = tuple(int(n) for n in annotation["img_shape"])
    data = np.ascontiguousarray(keypoint.transpose(3, 1, 2, 0), dtype=np.float32)  # (3, T, V, M)
    return Sequence(data=data, layout=layout, label=int(label), meta=meta)


def read_pyskl(path: str | Path, split: str | None = None, layout: str | None = None) -> list[Sequence]:
    """The annotations of a PYSKL pickle, {"split": {name: [frame_dir, ...]}, "annotations":
    [{"frame_dir", "label", "keypoint" (M, T, V, C), ...}]} (a bare list of annotations is
    accepted too), as Sequences (3, T, V, M) in annotation order.

    3D keypoints give (x, y, z). 2D keypoints give (x, y, score) with keypoint_score
    (M, T, V) as the score, or, without it, score 1.0 for every joint with a non-zero
    coordinate and 0 for zero-padded ones. `split` keeps the annotations listed in
    data["split"][split]. The layout is `layout`, else inferred from V (LAYOUT_BY_JOINTS).
    meta: source, name (frame_dir), img_shape if given, and the NTU name fields
    (setup, camera, subject, replication, action) when frame_dir is an NTU sample name.
    Annotations without keypoints (PYSKL's Kinetics files keep them apart) are errors.
    The file is read with a restricted unpickler: only containers and numpy arrays.
    """
    source = str(path)
    try:
        contents = load_pickle(path)
    except OSError:
        raise
    except Exception as error:  # corrupt, truncated, or refers to a class that is not allowed
        raise ValueError(f"{source}: cannot read as a PYSKL pickle: {type(error).__name__}: {error}") from None
    if isinstance(contents, list):
        contents = {"annotations": contents}
    if not isinstance(contents, dict) or not isinstance(contents.get("annotations"), list):
        raise ValueError(
            f"{source}: expected a dict with an 'annotations' list (PYSKL format), got {type(contents).__name__}"
        )
    annotations = list(enumerate(contents["annotations"]))
    if split is not None:
        splits = contents.get("split")
        if not isinstance(splits, dict) or split not in splits:
            known = ", ".join(map(str, splits)) if isinstance(splits, dict) else "none"
            raise ValueError(f"{source}: no split {split!r}; known splits: {known}")
        members = set(splits[split])
        annotations = [
            (index, annotation)
            for index, annotation in annotations
            if isinstance(annotation, dict) and annotation.get("frame_dir") in members
        ]
    return [_pyskl_sequence(annotation, index, layout, source) for index, annotation in annotations]


# ---------------------------------------------------------------------------------------
# CTR-GCN .npz


def load_numpy(path: Path):
    """An ndarray (.npy) or an open NpzFile (.npz), never unpickling anything."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a .npy or .npz file without pickled objects ({error})") from None


def _npz_array(npz, key: str, source: str) -> np.ndarray:
    if key not in npz.files:
        raise ValueError(f"{source}: no array '{key}' (arrays: {', '.join(npz.files) or 'none'})")
    try:
        return npz[key]
    except (ValueError, EOFError, zipfile.BadZipFile) as error:  # an object array, or corrupt
        raise ValueError(f"{source}: array '{key}': {error}") from None


def _labels_from_y(y: np.ndarray, N: int, name: str, source: str) -> np.ndarray:
    """(N,) integer labels from integer labels (N,) or one-hot rows (N, K)."""
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{source}: '{name}' must be numeric, got {y.dtype}")
    if y.ndim == 2 and y.shape[0] == N:
        one_hot = np.isin(y, (0, 1)).all(1) & (y.sum(1) == 1)
        if not one_hot.all():
            raise ValueError(f"{source}: '{name}' row {np.flatnonzero(~one_hot)[0]} is not one-hot")
        return y.argmax(1)
    if y.ndim == 1 and y.shape[0] == N:
        whole = np.isfinite(y) & (y == np.round(y)) & (y >= 0)
        if not whole.all():
            raise ValueError(
                f"{source}: '{name}'[{np.flatnonzero(~whole)[0]}] is not a class index: "
                f"{y[np.flatnonzero(~whole)[0]]!r}"
            )
        return y.astype(np.int64)
    raise ValueError(
        f"{source}: '{name}' must be integer labels ({N},) or one-hot ({N}, num_classes), got shape {y.shape}"
    )


def read_ctrgcn_npz(path: str | Path, part: str = "test", layout: str = "ntu25") -> list[Sequence]:
    """The `part` ("train" or "test") of a CTR-GCN .npz: x_{part} (N, T, M*V*3), each frame
    body-major (M bodies of V joints of x, y, z; NTU: 2 x 25 x 3 = 150), zero-padded to T;
    y_{part} one-hot (N, num_classes) or labels (N,).

    Returns Sequences (3, T_valid, V, M), trailing all-zero frames removed (at least one
    frame kept); M is derived from the last dimension and V from `layout`.
    meta: source, part, index (the sample's row in x_{part}).
    """
    if part not in ("train", "test"):
        raise ValueError(f"unknown part {part!r}; CTR-GCN files hold 'train' and 'test'")
    path = Path(path)
    source = str(path)
    V = get_layout(layout).num_joints
    npz = load_numpy(path)
    if isinstance(npz, np.ndarray):
        raise ValueError(f"{source}: expected a .npz archive with x_{part} and y_{part}, found a single array")
    with npz:
        x = _npz_array(npz, f"x_{part}", source)
        y = _npz_array(npz, f"y_{part}", source)
    if x.ndim != 3 or x.shape[2] % (V * 3) or x.shape[2] == 0 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(
            f"{source}: 'x_{part}' must be numeric (N, T, M*{V}*3) for layout {layout!r}, "
            f"got shape {x.shape} ({x.dtype})"
        )
    N, M = x.shape[0], x.shape[2] // (V * 3)
    labels = _labels_from_y(y, N, f"y_{part}", source)
    finite = np.isfinite(x).reshape(N, -1).all(1)
    if not finite.all():
        raise ValueError(f"{source}: 'x_{part}' sample {np.flatnonzero(~finite)[0]} holds NaN or infinite values")
    sequences = []
    for n in range(N):
        nonzero_frames = np.flatnonzero(np.any(x[n] != 0, axis=1))
        T_valid = nonzero_frames[-1] + 1 if len(nonzero_frames) else 1
        data = x[n, :T_valid].reshape(T_valid, M, V, 3).transpose(3, 0, 2, 1)  # (3, T, V, M)
        sequences.append(
            Sequence(
                data=np.ascontiguousarray(data, dtype=np.float32),
                layout=layout,
                label=int(labels[n]),
                meta={"source": source, "part": part, "index": n},
            )
        )
    return sequences


# ---------------------------------------------------------------------------------------
# Kinetics-skeleton (ST-GCN)

KINETICS_JOINTS = 18


def _finite_numbers(values, count: int) -> bool:
    return (
        isinstance(values, list)
        and len(values) == count
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    )


def parse_kinetics_json(text: str | bytes, source: str, max_people: int = 2) -> Sequence:
    """One Kinetics-skeleton document as a Sequence (3, T, 18, max_people); see read_kinetics_json."""
    document = parse_json(text, source)
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise ValueError(f"{source}: expected a JSON object with a 'data' list of frames")
    frames = {}  # frame_index -> [(total score, pose (36,), score (18,))] in listed order
    for position, frame in enumerate(document["data"]):
        index = frame.get("frame_index") if isinstance(frame, dict) else None
        if not _is_integer(index) or index < 1:
            raise ValueError(f"{source}: data[{position}]: 'frame_index' must be an integer >= 1, got {index!r}")
        if index in frames:
            raise ValueError(f"{source}: frame {index}: listed twice")
        people = frame.get("skeleton")
        if not isinstance(people, list):
            raise ValueError(f"{source}: frame {index}: 'skeleton' must be a list of people")
        frames[index] = []
        for person, skeleton in enumerate(people):
            pose = skeleton.get("pose") if isinstance(skeleton, dict) else None
            score = skeleton.get("score") if isinstance(skeleton, dict) else None
            if not _finite_numbers(pose, 2 * KINETICS_JOINTS):
                raise ValueError(
                    f"{source}: frame {index}, person {person}: 'pose' must be "
                    f"{2 * KINETICS_JOINTS} finite numbers (x0, y0, x1, y1, ...), got {pose!r:.60}"
                )
            if not _finite_numbers(score, KINETICS_JOINTS):
                raise ValueError(
                    f"{source}: frame {index}, person {person}: 'score' must be "
                    f"{KINETICS_JOINTS} finite numbers, got {score!r:.60}"
                )
            frames[index].append((sum(score), pose, score))
    if not frames:
        raise ValueError(f"{source}: no frames ('data' is empty)")
    label = document.get("label_index", -1)
    if not _is_integer(label) or label < -1:
        raise ValueError(f"{source}: 'label_index' must be an integer >= -1, got {label!r}")
    data = np.zeros((3, max(frames), KINETICS_JOINTS, max_people), dtype=np.float32)
    for index, people in frames.items():
        ranked = sorted(people, key=lambda person: -person[0])  # stable: ties keep listed order
        for slot, (_, pose, score) in enumerate(ranked[:max_people]):
            data[0, index - 1, :, slot] = pose[0::2]
            data[1, index - 1, :, slot] = pose[1::2]
            data[2, index - 1, :, slot] = score
    meta = {"source": source, "name": Path(source).stem, "coordinates": "xy"}  # x, y, score
    if isinstance(document.get("label"), str):
        meta["label_name"] = document["label"]
    return Sequence(data=data, layout="openpose18", label=None if label == -1 else label, meta=meta)


def read_kinetics_json(path: str | Path, max_people: int = 2) -> Sequence:
    """A Kinetics-skeleton JSON file (ST-GCN's kinetics-skeleton): {"data": [{"frame_index":
    1-based, "skeleton": [{"pose": [x0, y0, ..., x17, y17], "score": [18]}, ...]}, ...],
    "label": str, "label_index": int} as a Sequence (3, T, 18, max_people), layout
    openpose18, channels (x, y, score) as stored (ST-GCN's feeder centres x, y by -0.5
    later; not done here).

    T is the largest frame_index; frames absent from "data" stay zeros. People have no
    identity across frames, so, as ST-GCN does, each frame's people are ranked by their
    summed joint scores and the top max_people fill slots 0, 1, ... (slot 0 holds the most
    confident person of every frame); unlike ST-GCN, all listed people are ranked, not only
    the first five. label = label_index (0-based), None when it is missing or -1.
    meta: source, name (file stem), label_name (the "label" string) when present.
    """
    path = Path(path)
    return parse_kinetics_json(path.read_bytes(), str(path), max_people)


def iter_kinetics(folder: str | Path, max_people: int = 2) -> Iterator[Sequence | ValueError]:
    """Every Kinetics-skeleton .json file of `folder`, in name order; a malformed file
    yields its ValueError (naming the file) instead of a Sequence."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: expected a folder of Kinetics-skeleton .json files")
    for file in sorted(folder.glob("*.json")):
        try:
            yield read_kinetics_json(file, max_people)
        except ValueError as error:
            yield error


# ---------------------------------------------------------------------------------------
# Generic arrays


def from_array(
    array: np.ndarray, layout: str, labels=None, names=None, array_layout: str = "NCTVM", *, source: str = "array"
) -> list[Sequence]:
    """N sequences from an array whose dimensions are ordered as `array_layout`, any
    permutation of N (sequences), C (channels), T (frames), V (joints), M (bodies), e.g.
    "NTVMC" for (N, T, V, M, C). Each becomes a Sequence (C, T, V, M) float32.

    labels: N class indices (0-based) or None; names: N names or None. `source` names the
    array in errors and meta. meta: source, index, and name when names are given.
    """
    if sorted(array_layout) != sorted("NCTVM"):
        raise ValueError(f"{source}: array_layout {array_layout!r} must order the letters N, C, T, V, M")
    array = np.asarray(array)
    if array.ndim != 5 or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(
            f"{source}: expected a real 5-dimensional ({', '.join(array_layout)}) array, "
            f"got shape {array.shape} ({array.dtype})"
        )
    array = array.transpose([array_layout.index(axis) for axis in "NCTVM"])
    N, V = array.shape[0], array.shape[3]
    if get_layout(layout).num_joints != V:
        raise ValueError(f"{source}: V = {V} joints, but layout {layout!r} has {get_layout(layout).num_joints}")
    for what, values in (("labels", labels), ("names", names)):
        if values is not None and len(values) != N:
            raise ValueError(f"{source}: {len(values)} {what} for {N} sequences")
    sequences = []
    for n in range(N):
        if not np.isfinite(array[n]).all():
            raise ValueError(f"{source}: sequence {n} holds NaN or infinite values")
        label = None
        if labels is not None:
            label = labels[n]
            if not _is_integer(label) or label < 0:
                raise ValueError(f"{source}: label {n} must be a non-negative integer, got {label!r}")
            label = int(label)
        meta = {"source": source, "index": n}
        if names is not None:
            meta["name"] = str(names[n])
        sequences.append(
            Sequence(data=np.ascontiguousarray(array[n], dtype=np.float32), layout=layout, label=label, meta=meta)
        )
    return sequences


def read_array_file(
    path: str | Path, layout: str, array_layout: str = "NCTVM", labels_key: str | None = None
) -> list[Sequence]:
    """Sequences from a .npy array or a .npz archive (never unpickled), dimensions ordered
    as `array_layout` (see from_array). In a .npz the array is "x", else "data", else the
    first array other than `labels_key`; labels, if wanted, come from the array `labels_key`
    ((N,) labels or (N, num_classes) one-hot)."""
    path = Path(path)
    source = str(path)
    loaded = load_numpy(path)
    if isinstance(loaded, np.ndarray):
        if labels_key is not None:
            raise ValueError(f"{source}: a .npy file holds one array; labels_key={labels_key!r} needs a .npz")
        return from_array(loaded, layout, array_layout=array_layout, source=source)
    with loaded as npz:
        candidates = [key for key in ("x", "data") if key in npz.files] or [
            key for key in npz.files if key != labels_key
        ]
        if not candidates:
            raise ValueError(f"{source}: no array of sequences (arrays: {', '.join(npz.files) or 'none'})")
        array = _npz_array(npz, candidates[0], source)
        y = None if labels_key is None else _npz_array(npz, labels_key, source)
    sequences = from_array(array, layout, array_layout=array_layout, source=source)
    if y is not None:
        for sequence, label in zip(sequences, _labels_from_y(y, len(sequences), labels_key, source)):
            sequence.label = int(label)
    return sequences
