"""Readers for the array formats other code bases store skeletons in.

    read_pyskl(path)          PYSKL annotation pickles (2D or 3D keypoints)
    read_ctrgcn_npz(path)     CTR-GCN's NTU / NW-UCLA .npz files (x_train, y_train, x_test, y_test)
    read_kinetics_json(path)  Kinetics-skeleton JSON as ST-GCN stores it (OpenPose, 18 joints)
    iter_kinetics(folder)     every Kinetics-skeleton file of a folder
    from_array(array, layout) an in-memory (N, C, T, V, M) array in any dimension order
    read_array_file(path)     such an array from a .npy or .npz file (never unpickled)
    from_sequences(arrays, labels, layout)  a list of clips of any lengths, e.g. (T, V, C) each
    read_clip_arrays(path)    such clips from an .npz (one array per clip) or a folder of .npy

Every reader returns Sequences (C, T, V, M) float32; errors are ValueErrors naming the file
and, where it applies, the sample or frame.
"""

from __future__ import annotations

import numbers
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from skelang.data.json_text import parse_json
from skelang.data.layouts import SkeletonLayout, get_layout, layout_from_dict, layout_names, register_layout
from skelang.data.ntu import NTU_NAME, parse_ntu_name
from skelang.data.safe_pickle import load_pickle
from skelang.data.sequence import (
    BEYOND_FLOAT32,
    MissingSkeletonError,
    Sequence,
    data_files,
    is_float32_number,
    is_real_array,
    value_or_error,
    within_float32,
)

# The layout a joint count stands for when a file does not name its skeleton.
LAYOUT_BY_JOINTS = {25: "ntu25", 17: "coco17", 18: "openpose18", 20: "kinect_v1_20", 33: "blazepose33", 15: "jhmdb15"}


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _ntu_fields(name: str, where: str) -> dict:
    """Setup, camera, subject, ... when `name` is an NTU sample name, else nothing; a name
    of NTU's form with a field outside NTU's range is a ValueError naming `where`."""
    if NTU_NAME.search(Path(name).name) is None:
        return {}
    try:
        return parse_ntu_name(name)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


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
    if not _is_integer(label) or label < -1:
        raise ValueError(f"{where}: 'label' must be a non-negative integer (or -1: unlabelled), got {label!r}")
    try:
        keypoint = np.asarray(annotation["keypoint"])
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{where}: 'keypoint' is not an array: {error}") from None
    if keypoint.ndim != 4 or keypoint.shape[3] not in (2, 3) or not is_real_array(keypoint):
        raise ValueError(
            f"{where}: 'keypoint' must be a real (M, T, V, C) array with C = 2 or 3, "
            f"got shape {keypoint.shape} ({keypoint.dtype})"
        )
    M, T, V, C = keypoint.shape
    total_frames = annotation.get("total_frames")  # None (or absent): unknown, the keypoints tell
    if total_frames is not None and not _is_integer(total_frames):
        raise ValueError(f"{where}: 'total_frames' must be an integer, got {total_frames!r}")
    if total_frames is not None and total_frames != T:
        raise ValueError(f"{where}: 'total_frames' is {total_frames!r} but 'keypoint' has {T} frames")
    if not within_float32(keypoint).all():
        raise ValueError(f"{where}: 'keypoint' holds {BEYOND_FLOAT32}")
    if M == 0 or T == 0 or not keypoint.any():
        raise MissingSkeletonError(
            f"{where}: nobody was detected (keypoint of shape {keypoint.shape}{', all zero' if keypoint.size else ''})"
        )
    if C == 2:
        if annotation.get("keypoint_score") is not None:
            try:
                score = np.asarray(annotation["keypoint_score"])
            except ValueError as error:  # ragged nested lists
                raise ValueError(f"{where}: 'keypoint_score' is not an array: {error}") from None
            if score.shape != (M, T, V) or not is_real_array(score):
                raise ValueError(
                    f"{where}: 'keypoint_score' must be real of shape {(M, T, V)} "
                    f"(as 'keypoint' minus C), got {score.shape} ({score.dtype})"
                )
            if not within_float32(score).all():
                raise ValueError(f"{where}: 'keypoint_score' holds {BEYOND_FLOAT32}")
        else:  # detected joints are certain; zero-padded (absent) ones stay zero
            score = np.any(keypoint != 0, axis=3)
        keypoint = np.concatenate([keypoint, score[..., None].astype(keypoint.dtype)], axis=3)
    if layout is None:
        if V not in LAYOUT_BY_JOINTS:
            raise ValueError(
                f"{where}: cannot tell the skeleton layout from {V} joints; pass it (--layout, or layout= in Python)"
            )
        layout = LAYOUT_BY_JOINTS[V]
    elif get_layout(layout).num_joints != V:
        raise ValueError(f"{where}: {V} joints, but layout {layout!r} has {get_layout(layout).num_joints}")
    frame_dir = annotation["frame_dir"]
    meta = {"source": source, "name": frame_dir, **_ntu_fields(frame_dir, where)}
    if C == 2:
        meta["coordinates"] = "xy"  # channels x, y, score
    for key in ("img_shape", "original_shape"):  # (height, width); None: unknown
        shape = annotation.get(key)
        if shape is None:
            continue
        if not (isinstance(shape, (tuple, list)) and len(shape) == 2 and all(_is_integer(n) and n > 0 for n in shape)):
            raise ValueError(f"{where}: {key!r} must be (height, width) in pixels or None, got {shape!r:.60}")
        meta[key] = tuple(int(n) for n in shape)
    data = np.ascontiguousarray(keypoint.transpose(3, 1, 2, 0), dtype=np.float32)  # (3, T, V, M)
    return Sequence(data=data, layout=layout, label=None if label == -1 else int(label), meta=meta)


def read_pyskl(path: str | Path, split: str | None = None, layout: str | None = None) -> list[Sequence]:
    """The annotations of a PYSKL pickle, {"split": {name: [frame_dir, ...]}, "annotations":
    [{"frame_dir", "label", "keypoint" (M, T, V, C), ...}]} (a bare list of annotations is
    accepted too), as Sequences (3, T, V, M) in annotation order; the first bad annotation
    raises (iter_pyskl yields each error and goes on). A label of -1 is unlabelled (None), as
    `skelang data extract --format pyskl` writes videos without a label.

    3D keypoints give (x, y, z). 2D keypoints give (x, y, score) with keypoint_score
    (M, T, V) as the score, or, without it, score 1.0 for every joint with a non-zero
    coordinate and 0 for zero-padded ones. `split` keeps the annotations listed in
    data["split"][split]. The layout is `layout`, else inferred from V (LAYOUT_BY_JOINTS).
    Optional fields that are None (img_shape, original_shape, total_frames, keypoint_score,
    as MMAction2 writes them for clips without video) are unknown. meta: source, name
    (frame_dir), img_shape and original_shape if known, and the NTU name fields (setup,
    camera, subject, replication, action) when frame_dir is an NTU sample name. An annotation
    without keypoints or with no person in them raises MissingSkeletonError. The file is read
    with a restricted unpickler: only containers and numpy arrays.
    """
    sequences = []
    for item in iter_pyskl(path, split, layout):
        if isinstance(item, ValueError):
            raise item
        sequences.append(item)
    return sequences


def iter_pyskl(
    path: str | Path, split: str | None = None, layout: str | None = None
) -> Iterator[Sequence | ValueError]:
    """Each annotation of a PYSKL pickle (see read_pyskl) as a Sequence, or as the ValueError
    that names the file, the annotation and the key (MissingSkeletonError for nobody); an
    unreadable file raises."""
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
        if not isinstance(splits[split], (list, tuple)):
            raise ValueError(f"{source}: split {split!r} must list frame_dir names, got {type(splits[split]).__name__}")
        members = {name for name in splits[split] if isinstance(name, str)}
        annotations = [
            (index, annotation)
            for index, annotation in annotations
            if isinstance(annotation, dict) and annotation.get("frame_dir") in members
        ]
    first_of = {}  # frame_dir -> the index of its first annotation: names are sample ids
    for index, annotation in annotations:
        try:
            frame_dir = annotation.get("frame_dir") if isinstance(annotation, dict) else None
            if isinstance(frame_dir, str) and first_of.setdefault(frame_dir, index) != index:
                raise ValueError(
                    f"{source}: annotation {index} ({frame_dir!r}): 'frame_dir' repeats annotation "
                    f"{first_of[frame_dir]}'s; a sample's name must be unique (scores and ensembles match by it)"
                )
            yield _pyskl_sequence(annotation, index, layout, source)
        except ValueError as error:
            yield error
        except (TypeError, KeyError, AttributeError, IndexError) as error:  # a field of an unexpected type
            yield ValueError(f"{source}: annotation {index}: unreadable field ({type(error).__name__}: {error})")


# ---------------------------------------------------------------------------------------
# CTR-GCN .npz


def load_numpy(path: Path):
    """An ndarray (.npy) or an open NpzFile (.npz), never unpickling anything."""
    try:
        with open(path, "rb") as file:
            head = file.read(6)
    except OSError as error:
        raise ValueError(f"{path}: cannot read it ({error.strerror})") from None
    if head != b"\x93NUMPY" and not head.startswith(b"PK"):
        raise ValueError(f"{path}: not a .npy or .npz file (it starts with {head!r}, not a NumPy or zip header)")
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
    if not is_real_array(y):
        raise ValueError(f"{source}: '{name}' must be real numbers, got {y.dtype}")
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
    if x.ndim != 3 or x.shape[2] % (V * 3) or x.shape[2] == 0 or not is_real_array(x):
        raise ValueError(
            f"{source}: 'x_{part}' must be real (N, T, M*{V}*3) for layout {layout!r}, got shape {x.shape} ({x.dtype})"
        )
    N, M = x.shape[0], x.shape[2] // (V * 3)
    labels = _labels_from_y(y, N, f"y_{part}", source)
    sequences = []
    for n in range(N):
        if not within_float32(x[n]).all():  # sample by sample: no copy of the whole array
            raise ValueError(f"{source}: 'x_{part}' sample {n} holds {BEYOND_FLOAT32}")
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
    return isinstance(values, list) and len(values) == count and all(map(is_float32_number, values))


# The largest frame_index read: the clip is allocated up to it (frames left out of 'data' are
# zeros), so an absurd index would ask for gigabytes.
KINETICS_MAX_FRAMES = 108_000


def parse_kinetics_json(text: str | bytes, source: str, max_people: int = 2) -> Sequence:
    """One Kinetics-skeleton document as a Sequence (3, T, 18, max_people); see read_kinetics_json."""
    document = parse_json(text, source)
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise ValueError(f"{source}: expected a JSON object with a 'data' list of frames")
    frames = {}  # frame_index -> [(total score, pose (36,), score (18,))] in listed order
    for position, frame in enumerate(document["data"]):
        index = frame.get("frame_index") if isinstance(frame, dict) else None
        if not _is_integer(index) or not 1 <= index <= KINETICS_MAX_FRAMES:
            raise ValueError(
                f"{source}: data[{position}]: 'frame_index' must be an integer from 1 to "
                f"{KINETICS_MAX_FRAMES:,} (an hour at 30 fps), got {index!r:.40}"
            )
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
                    f"{2 * KINETICS_JOINTS} finite float32 numbers (x0, y0, x1, y1, ...), got {pose!r:.60}"
                )
            if not _finite_numbers(score, KINETICS_JOINTS):
                raise ValueError(
                    f"{source}: frame {index}, person {person}: 'score' must be "
                    f"{KINETICS_JOINTS} finite float32 numbers, got {score!r:.60}"
                )
            if any(pose) or any(score):  # an all-zero person is nobody (as PYSKL's zero keypoints)
                frames[index].append((sum(score), pose, score))
    if not frames:
        raise MissingSkeletonError(f"{source}: nobody was detected: 'data' holds no frame")
    if not any(frames.values()):
        raise MissingSkeletonError(f"{source}: nobody was detected in any of its {len(frames)} frames")
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
    for file in data_files(folder, ".json"):
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
    if array.ndim != 5 or not is_real_array(array):
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
        if not within_float32(array[n]).all():
            raise ValueError(f"{source}: sequence {n} holds {BEYOND_FLOAT32}")
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


# ---------------------------------------------------------------------------------------
# Your own data: variable-length arrays

COORDINATES = ("xyz", "xy", "xy+score")


def _resolve_layout(layout) -> str:
    """A layout name, a SkeletonLayout or a layout_from_dict mapping -> a registered name."""
    if isinstance(layout, str):
        get_layout(layout)  # a KeyError listing the known layouts
        return layout
    if isinstance(layout, SkeletonLayout):
        known = get_layout(layout.name) if layout.name in layout_names() else None
        if known is None:
            register_layout(layout)
        elif known != layout:
            raise ValueError(f"layout {layout.name!r} is registered already with other joints; rename yours")
        return layout.name
    if isinstance(layout, dict):
        return _resolve_layout(layout_from_dict(layout))
    raise ValueError(f"layout must be a layout name, a SkeletonLayout or a mapping, got {type(layout).__name__}")


def from_sequences(
    arrays,
    labels=None,
    layout="coco17",
    class_names: list[str] | None = None,
    dims: str = "TVC",
    coordinates: str | None = None,
    names: list[str] | None = None,
    source: str = "arrays",
) -> list[Sequence]:
    """Sequences from a list of arrays of any lengths: one clip each, its dimensions ordered
    as `dims`, a permutation of "TVC" (one person) or of "TVCM"/"MTVC"... (M people); the
    common form of JHMDB, Penn Action and pose-estimator output.

    labels:      one per clip: integers (0-based class indices), or strings (class names,
                 which become classes: `class_names` when given, else the sorted distinct
                 names; the order is kept in each Sequence's meta["class_names"]); or None.
    layout:      a layout name (skelang.data.layout_names()), a SkeletonLayout, or a mapping
                 for layout_from_dict (your own joints), with V joints.
    coordinates: "xyz" (3D), "xy" (2D; a joint at (0, 0) is undetected: score 0, else 1) or
                 "xy+score" (2D with a detection score per joint, OpenPose's); default "xy"
                 for C = 2 and "xyz" for C = 3.
    Returns Sequences (3, T, V, M) float32; meta: source, index, name (`names[i]` or
    "<source>#<i>"), label_name and class_names when labels are names. A clip without any
    detected joint raises MissingSkeletonError; other bad input a ValueError naming the clip
    (iter_clips yields each error instead and goes on).
    """
    sequences = []
    for item in iter_clips(arrays, labels, layout, class_names, dims, coordinates, names, source):
        if isinstance(item, ValueError):
            raise item
        sequences.append(item)
    return sequences


def check_dims(dims: str, source: str) -> None:
    """`dims` orders the letters T, V, C (and M): a ValueError naming `source` otherwise."""
    if not isinstance(dims, str) or sorted(dims.upper()) not in (sorted("TVC"), sorted("TVCM")):
        raise ValueError(f"{source}: dims {dims!r} must order the letters T, V, C (and M)")


def iter_clips(
    arrays, labels=None, layout="coco17", class_names=None, dims="TVC", coordinates=None, names=None, source="arrays"
) -> Iterator[Sequence | ValueError]:
    """from_sequences clip by clip: each a Sequence or the ValueError naming it (a check of
    the whole call, such as the layout or the label count, raises)."""
    check_dims(dims, source)
    dims = dims.upper()
    layout_name = _resolve_layout(layout)
    arrays = list(arrays)
    for what, values in (("labels", labels), ("names", names)):
        if values is not None and len(values) != len(arrays):
            raise ValueError(f"{source}: {len(values)} {what} for {len(arrays)} clips")
    label_names = None
    if labels is not None and any(isinstance(label, str) for label in labels):
        if not all(isinstance(label, str) for label in labels):
            raise ValueError(f"{source}: labels mix class names and numbers")
        label_names = list(class_names) if class_names is not None else sorted(set(labels))
        unknown = sorted(set(labels) - set(label_names))
        if unknown:
            raise ValueError(f"{source}: labels {unknown[:5]} are not in class_names")
    for i, clip in enumerate(arrays):
        if isinstance(clip, ValueError):  # a clip that could not be read (its file named)
            yield clip
            continue
        where = f"{source}: clip {i}" + (f" ({names[i]!r})" if names is not None else "")
        meta = {"source": source, "index": i, "name": str(names[i]) if names is not None else f"{source}#{i}"}
        try:
            label = None
            if labels is not None:
                if label_names is not None:
                    label = label_names.index(labels[i])
                    meta.update(label_name=labels[i], class_names=label_names)
                elif _is_integer(labels[i]) and labels[i] >= 0:
                    label = int(labels[i])
                else:
                    raise ValueError(
                        f"{where}: label must be a non-negative integer or a class name, got {labels[i]!r}"
                    )
            yield _clip_sequence(clip, dims, layout_name, coordinates, where, label, meta)
        except ValueError as error:
            yield error


def _clip_sequence(
    clip, dims: str, layout_name: str, coordinates: str | None, where: str, label, meta: dict
) -> Sequence:
    V = get_layout(layout_name).num_joints
    clip = np.asarray(clip)
    if clip.ndim != len(dims) or not is_real_array(clip):
        raise ValueError(
            f"{where}: expected a real {len(dims)}-D ({', '.join(dims)}) array, got shape {clip.shape} ({clip.dtype})"
        )
    if not within_float32(clip).all():
        raise ValueError(f"{where}: {BEYOND_FLOAT32} (mark an undetected joint with zeros instead)")
    order = [dims.index(axis) for axis in "CTVM" if axis in dims]
    data = clip.transpose(order).astype(np.float32)  # (C, T, V[, M])
    if data.ndim == 3:
        data = data[..., None]
    C, T = data.shape[:2]
    if data.shape[2] != V:
        raise ValueError(f"{where}: {data.shape[2]} joints, but layout {layout_name!r} has {V}")
    kind = coordinates or {2: "xy", 3: "xyz"}.get(C)
    if kind not in COORDINATES or C != {"xyz": 3, "xy": 2, "xy+score": 3}[kind]:
        raise ValueError(f"{where}: {C} channels do not fit coordinates {kind!r} (xyz: 3, xy: 2, xy+score: 3)")
    if kind == "xy":  # a joint at the origin was not detected
        data = np.concatenate([data, np.any(data != 0, axis=0, keepdims=True).astype(np.float32)], axis=0)
    if T == 0 or not data[:2].any():
        raise MissingSkeletonError(f"{where}: nobody in the clip ({T} frames, no detected joint)")
    if kind != "xyz":
        meta["coordinates"] = "xy"
    return Sequence(data=np.ascontiguousarray(data), layout=layout_name, label=label, meta=meta)


def read_labels_file(path: str | Path) -> dict[str, str]:
    """A CSV file of `name,label` lines (a header line `name,label` is allowed): clip name (a
    file's stem or an .npz entry) -> label (a class name or an integer, as text)."""
    import csv

    path = Path(path)
    labels = {}
    with open(path, newline="", encoding="utf-8") as file:
        for number, row in enumerate(csv.reader(file), 1):
            if not row or row[0].startswith("#") or (number == 1 and [c.strip() for c in row] == ["name", "label"]):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(f"{path}:{number}: expected 'name,label', got {','.join(row)!r:.60}")
            name = row[0].strip()
            if name in labels:
                raise ValueError(f"{path}:{number}: {name!r} is labelled twice")
            labels[name] = row[1].strip()
    return labels


def read_clip_arrays(
    path: str | Path,
    layout="coco17",
    dims: str = "TVC",
    labels: str | Path | None = None,
    coordinates: str | None = None,
) -> Iterator[Sequence | ValueError]:
    """iter_clips of the clips of a .npz file (one array per clip, keyed by its name) or of a
    folder of .npy files (one clip each, named by the file's stem; in class-named subfolders
    the folder names the label, and the clip is named "<folder>/<stem>"). `labels` is a CSV
    file of `name,label` lines naming clips by stem (see read_labels_file); labels that are
    whole numbers are class indices, others class names.
    Each clip is a Sequence or the ValueError naming it."""
    path = Path(path)
    if path.is_dir():
        files = data_files(path, ".npy") or data_files(path, ".npy", nested=True)
        if not files:
            raise ValueError(f"{path}: no .npy clip files (one (T, V, C) array per file)")
        stems = [file.stem for file in files]
        arrays = [value_or_error(load_numpy, file) for file in files]
        folder_labels = [file.parent.name for file in files] if files[0].parent != path else None
        # clips of different classes may share a stem (run/0001.npy, walk/0001.npy): the name
        # is a sample id (scores.npz, ensembles), so a subfolder's clip keeps its folder
        names = stems if folder_labels is None else [f"{file.parent.name}/{file.stem}" for file in files]
    else:
        npz = load_numpy(path)
        if isinstance(npz, np.ndarray):
            raise ValueError(
                f"{path}: one array: for clips of one shape use read_array_file, else an .npz of one array per clip"
            )
        with npz:
            names = stems = list(npz.files)
            arrays = [value_or_error(_npz_array, npz, name, str(path)) for name in names]
        folder_labels = None
    clip_labels = folder_labels
    if labels is not None:
        table = read_labels_file(labels)
        missing = [stem for stem in stems if stem not in table]  # the table names clips by stem
        if missing:
            raise ValueError(f"{labels}: no label for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        clip_labels = [table[stem] for stem in stems]
    if clip_labels is not None and all(label.isdecimal() for label in clip_labels):
        clip_labels = [int(label) for label in clip_labels]
    yield from iter_clips(
        arrays, clip_labels, layout, dims=dims, coordinates=coordinates, names=names, source=str(path)
    )
