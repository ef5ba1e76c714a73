"""Northwestern-UCLA Multiview Action3D as the CTR-GCN code base stores it: one JSON file
per sequence, {"file_name": str, "skeletons": [T][20][3] (Kinect v1, metres), "label": 1..10},
in a folder or in the all_sqe.tar.xz archive."""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from skelang.data.json_text import parse_json
from skelang.data.sequence import MissingSkeletonError, Sequence, data_files, is_float32_number

# label 1..10 -> (action code, name)
NW_UCLA_CLASSES = (
    ("a01", "pick up with one hand"),
    ("a02", "pick up with two hands"),
    ("a03", "drop trash"),
    ("a04", "walk around"),
    ("a05", "sit down"),
    ("a06", "stand up"),
    ("a08", "donning"),
    ("a09", "doffing"),
    ("a11", "throw"),
    ("a12", "carry"),
)
NW_UCLA_NAME = re.compile(r"a(\d{2})_s(\d{2})_e(\d{2})_v(\d{2})")
NUM_JOINTS = 20


def parse_nw_ucla_name(name: str) -> dict:
    """'a01_s02_e03_v01' -> action code, subject, episode, view."""
    match = NW_UCLA_NAME.search(Path(name).name)
    if match is None:
        raise ValueError(f"{name}: not an NW-UCLA sample name (expected aNN_sNN_eNN_vNN)")
    action, subject, episode, view = (int(g) for g in match.groups())
    return {"action_code": f"a{action:02d}", "subject": subject, "episode": episode, "view": view}


def parse_nw_ucla_json(text: str | bytes, source: str) -> Sequence:
    """One NW-UCLA JSON document as a Sequence (3, T, 20, 1); `source` names it in errors."""
    document = parse_json(text, source)
    if not isinstance(document, dict):
        raise ValueError(
            f"{source}: expected a JSON object with 'skeletons' and 'label', got {type(document).__name__}"
        )
    for key in ("skeletons", "label"):
        if key not in document:
            raise ValueError(f"{source}: missing key '{key}'")
    label = document["label"]
    if not isinstance(label, int) or not 1 <= label <= len(NW_UCLA_CLASSES):
        raise ValueError(f"{source}: 'label' must be an integer 1..{len(NW_UCLA_CLASSES)}, got {label!r}")
    frames = document["skeletons"]
    if not isinstance(frames, list):
        raise ValueError(f"{source}: 'skeletons' must be a list of frames, got {type(frames).__name__}")
    if not frames:
        raise MissingSkeletonError(f"{source}: nobody was recorded: 'skeletons' holds no frame")
    data = np.empty((len(frames), NUM_JOINTS, 3), dtype=np.float32)
    for t, frame in enumerate(frames):
        if not isinstance(frame, list) or len(frame) != NUM_JOINTS:
            got = len(frame) if isinstance(frame, list) else type(frame).__name__
            raise ValueError(f"{source}: frame {t}: expected {NUM_JOINTS} joints, got {got}")
        for v, joint in enumerate(frame):
            if not isinstance(joint, list) or len(joint) != 3 or not all(map(is_float32_number, joint)):
                raise ValueError(
                    f"{source}: frame {t}, joint {v}: expected 3 finite float32 numbers (x, y, z), got {joint!r:.60}"
                )
        data[t] = frame
    name = document.get("file_name") or Path(source).stem
    if not isinstance(name, str):
        raise ValueError(f"{source}: 'file_name' must be a string, got {name!r:.60}")
    meta = {"source": source, "name": name}
    try:
        meta.update(parse_nw_ucla_name(name))
    except ValueError:
        pass  # a user's file with another naming scheme: no view/subject metadata
    data = np.ascontiguousarray(data.transpose(2, 0, 1)[..., None])  # (3, T, 20, 1)
    return Sequence(data=data, layout="kinect_v1_20", label=label - 1, meta=meta)


def read_nw_ucla_json(path: str | Path) -> Sequence:
    path = Path(path)
    return parse_nw_ucla_json(path.read_bytes(), str(path))


def iter_nw_ucla(path: str | Path) -> Iterator[Sequence | ValueError]:
    """Every sequence of a folder of .json files or of a .tar(.xz) archive, in name order.

    A malformed file yields its ValueError (naming the file) instead of a Sequence, so a
    caller decides whether to stop or to list it as bad.
    """
    path = Path(path)
    if path.is_dir():
        for file in data_files(path, ".json"):
            try:
                yield read_nw_ucla_json(file)
            except ValueError as error:
                yield error
    elif tarfile.is_tarfile(path):
        # A compressed archive is read once, front to back (seeking back would decompress
        # it again for every file); the files are then parsed in name order.
        documents = {}
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if member.isfile() and member.name.lower().endswith(".json"):
                    documents[member.name] = archive.extractfile(member).read()
        for name in sorted(documents):
            try:
                yield parse_nw_ucla_json(documents[name], f"{path}:{name}")
            except ValueError as error:
                yield error
    else:
        raise ValueError(f"{path}: expected a folder of NW-UCLA .json files or a .tar(.xz) archive of them")
