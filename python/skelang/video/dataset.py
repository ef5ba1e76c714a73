"""`skelang data extract`: a skeleton dataset from a video or a folder of videos.

Each video's BlazePose landmarks are extracted once and kept in a work folder (default
OUT.poses beside OUT), so an extraction that was stopped resumes with the videos not yet
done, and another layout or coordinate choice re-uses them. Labels come from a CSV file of
`name,label` lines (name: the video's file stem; label: a class name or a number), or from
the videos' folders (class folders: DATA/<class>/<video>), or are left unknown. A video that
cannot be decoded, or in which nobody is found, is reported and skipped. The result is a
skelang cache, or with `format="pyskl"` a PYSKL pickle of 2D keypoints (image pixels,
landmark visibility as the score, as PYSKL's 2D annotations).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from skelang.data.cache import check_cache_destination, write_cache
from skelang.data.formats import read_labels_file
from skelang.data.mapping import map_layout
from skelang.data.sequence import Sequence
from skelang.files import atomic_open, torch_save_atomic
from skelang.video.extract import COORDINATES, VIDEO_SUFFIXES, PoseTrack, VideoError, extract_poses, video_info

FORMATS = ("cache", "pyskl")


def find_videos(path: str | os.PathLike) -> tuple[Path, list[Path]]:
    """(the root, the video files) of a video or a folder searched recursively (by suffix:
    VIDEO_SUFFIXES), sorted."""
    path = Path(path)
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such video or folder")
    videos = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise ValueError(f"{path}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    return path, videos


def video_labels(root: Path, videos: list[Path], labels_file: str | os.PathLike | None) -> tuple[list, list | None]:
    """(one label per video: int or None, the class names or None)."""
    if labels_file is not None:
        table = read_labels_file(labels_file)
        texts = [table.get(video.stem) for video in videos]
        missing = [video.name for video, text in zip(videos, texts) if text is None]
        if missing:
            raise ValueError(f"{labels_file}: no label for {len(missing)} video(s): {', '.join(missing[:5])}")
    else:
        folders = [video.relative_to(root).parts[:-1] for video in videos]
        if not all(folders):
            return [None] * len(videos), None
        texts = [parts[0] for parts in folders]
    if all(text.lstrip("-").isdigit() for text in texts):
        return [int(text) for text in texts], None
    names = sorted(set(texts))
    return [names.index(text) for text in texts], names


def _work_file(work: Path, root: Path, video: Path) -> Path:
    return work / (str(video.relative_to(root)).replace(os.sep, "__") + ".pt")


def _load_track(path: Path, video: Path, options: dict) -> PoseTrack | None:
    """The landmarks kept for `video`, or None when they were extracted with other options
    (or from another version of the file)."""
    import torch

    state = torch.load(path, weights_only=False)
    if state.get("options") != options:
        return None
    return PoseTrack(state["image"], state["world"], state["found"], video_info(video), state["seconds"])


def extract_dataset(
    path: str | os.PathLike,
    out: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    layout: str = "blazepose33",
    coordinates: str = "camera",
    max_people: int = 2,
    landmark_model: str = "full",
    format: str = "cache",
    work: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Extracts every video at `path` into `out` (see the module's documentation); returns the
    counts: videos, sequences written, skipped (name: reason), frames, seconds of extraction,
    frames per second, the work folder and the output."""
    from tqdm import tqdm

    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if coordinates not in COORDINATES:
        raise ValueError(f"--coordinates must be one of {', '.join(COORDINATES)}, got {coordinates!r}")
    if format == "pyskl" and coordinates != "image":
        raise ValueError("--format pyskl holds 2D keypoints: use --coordinates image")
    root, videos = find_videos(path)
    out = Path(out)
    if out.resolve() == Path(path).resolve() or Path(path).resolve() in out.resolve().parents:
        raise ValueError(f"--out {out}: inside the input {path}; choose a folder outside it")
    if format == "cache":
        check_cache_destination(out, force)
    elif out.exists() and not force:
        raise ValueError(f"--out {out} exists: choose another file or pass --force to replace it")
    label_of, class_names = video_labels(root, videos, labels)
    work = Path(work) if work is not None else out.with_name(out.name + ".poses")
    work.mkdir(parents=True, exist_ok=True)
    sequences, skipped, frames, seconds = [], {}, 0, 0.0
    for video, label in tqdm(list(zip(videos, label_of)), disable=not progress, unit="video"):
        file = _work_file(work, root, video)
        status = video.stat()  # the video's size and time: a replaced video is extracted again
        options = {
            "max_people": max_people,
            "landmark_model": landmark_model,
            "bytes": status.st_size,
            "modified_ns": status.st_mtime_ns,
        }
        try:
            track = _load_track(file, video, options) if file.is_file() else None
            if track is None:  # not extracted yet, or with other options, or the video changed
                track = extract_poses(video, max_people=max_people, landmark_model=landmark_model)
                state = {"image": track.image, "world": track.world, "found": track.found, "seconds": track.seconds}
                torch_save_atomic({**state, "options": options}, file)
        except VideoError as error:
            skipped[video.name] = str(error)
            continue
        if not track.found.any():
            skipped[video.name] = "nobody found in any frame"
            continue
        frames += len(track.found)
        seconds += track.seconds
        sequence = track.sequence(coordinates, label=label, min_frames=1)
        sequence.meta["name"] = str(video.relative_to(root).with_suffix(""))
        sequence.meta["image_shape"] = [track.info.height, track.info.width]
        if class_names is not None:
            sequence.meta["class_names"] = class_names
        sequences.append(map_layout(sequence, layout) if layout != sequence.layout else sequence)
    if not sequences:
        raise ValueError(
            f"{path}: no video gave a skeleton ({len(skipped)} skipped: "
            f"{'; '.join(f'{k}: {v}' for k, v in list(skipped.items())[:3])})"
        )
    if format == "cache":
        written = write_cache(_same_bodies(sequences), out, overwrite=force)
    else:
        written = _write_pyskl(sequences, out)
    return {
        "videos": len(videos),
        "sequences": len(sequences),
        "skipped": skipped,
        "frames": frames,
        "seconds": seconds,
        "frames_per_second": frames / seconds if seconds else None,
        "work": str(work),
        "out": str(written),
    }


def _same_bodies(sequences: list[Sequence]) -> list[Sequence]:
    """The sequences padded to the largest body count (a cache holds one shape)."""
    bodies = max(sequence.num_bodies for sequence in sequences)
    padded = []
    for sequence in sequences:
        data = np.zeros((*sequence.data.shape[:3], bodies), dtype=np.float32)
        data[..., : sequence.num_bodies] = sequence.data
        padded.append(Sequence(data, sequence.layout, sequence.label, sequence.meta))
    return padded


def _write_pyskl(sequences: list[Sequence], out: Path) -> Path:
    annotations = []
    for sequence in sequences:
        data = sequence.data  # (3, T, V, M): x, y, visibility
        annotations.append(
            {
                "frame_dir": sequence.meta["name"],
                "total_frames": sequence.num_frames,
                "img_shape": tuple(sequence.meta["image_shape"]),
                "original_shape": tuple(sequence.meta["image_shape"]),
                "label": -1 if sequence.label is None else sequence.label,
                "keypoint": np.ascontiguousarray(data[:2].transpose(3, 1, 2, 0), dtype=np.float32),  # (M, T, V, 2)
                "keypoint_score": np.ascontiguousarray(data[2].transpose(2, 0, 1), dtype=np.float32),  # (M, T, V)
            }
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as file:
        pickle.dump({"split": {"all": [a["frame_dir"] for a in annotations]}, "annotations": annotations}, file)
    return out
