"""Skeletons from videos: decoding (OpenCV), BlazePose per person and frame
(skelang.video.blazepose), and the result as a skelang Sequence.

    poses = extract_poses("clip.mp4", max_people=2)      # a PoseTrack
    sequence = poses.sequence()                           # blazepose33, camera space, metres
    ntu = map_layout(sequence, "ntu25")                   # for a model trained on NTU RGB+D

Coordinates of `PoseTrack.sequence()`:
- "camera" (default): each person's BlazePose world landmarks (metres) placed in the camera's
  space, so that two people keep their positions relative to each other: the hip centre's
  depth from the person's size in the image (metres per pixel from the body's least
  foreshortened bones) with an assumed horizontal field of view (`field_of_view`, 60 degrees
  by default), and x, y from its pixel position at that depth. Axes as NTU RGB+D's Kinect
  coordinates relate to its colour frames: x to the image's right, y up, z away from the
  camera. Monocular depth is an estimate: distances along z are the least reliable.
- "world": each person's world landmarks alone (centred between its hips), same axes.
- "image": x, y in pixels (y down) and the landmark's visibility as the third channel (2D
  data, meta coordinates "xy", as 2D skeleton formats are read).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from skelang.data.sequence import Sequence
from skelang.video.blazepose import NUM_LANDMARKS, BlazePose, Region

COORDINATES = ("camera", "world", "image")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class VideoError(ValueError):
    """A video that cannot be read."""


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ValueError(
            "reading videos needs the opencv-python-headless and ai-edge-litert packages: pip install 'skelang[video]'"
        ) from None
    return cv2


@dataclasses.dataclass
class VideoInfo:
    path: str
    frames: int
    fps: float
    width: int
    height: int


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate and size of a video; VideoError naming the file when it cannot
    be opened or holds no frame."""
    cv2 = _cv2()
    path = str(path)
    if not os.path.isfile(path):
        raise VideoError(f"{path}: no such video file")
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise VideoError(f"{path}: not a video OpenCV can decode")
        info = VideoInfo(
            path,
            int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            float(capture.get(cv2.CAP_PROP_FPS)),
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{path}: not a video OpenCV can decode (no frame size)")
    return info


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """The video's frames as RGB (H, W, 3) uint8 arrays, in order."""
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


# bones used for the metres-per-pixel scale: shoulders, hips, upper arms, forearms, thighs, shins
_SCALE_BONES = ((11, 12), (23, 24), (11, 13), (12, 14), (13, 15), (14, 16), (23, 25), (24, 26), (25, 27), (26, 28))


@dataclasses.dataclass
class PoseTrack:
    """BlazePose landmarks of up to M people over T frames of a video.

    image: (T, M, 33, 3) x, y in pixels and visibility in [0, 1]
    world: (T, M, 33, 3) metres, each person centred between its hips (x right, y down, z away)
    found: (T, M) whether body slot m holds a person in frame t (else its rows are zeros)
    """

    image: np.ndarray
    world: np.ndarray
    found: np.ndarray
    info: VideoInfo
    seconds: float = 0.0  # the extraction's wall time

    @property
    def frames_per_second(self) -> float:
        """Frames processed per second of wall time."""
        return len(self.found) / self.seconds if self.seconds > 0 else float("nan")

    def camera_space(self, field_of_view: float = 60.0) -> np.ndarray:
        """(T, M, 33, 3) each person's world landmarks placed in camera space (see the
        module's documentation), x right, y down, z away; zeros where nobody is."""
        focal = (self.info.width / 2) / math.tan(math.radians(field_of_view) / 2)
        centre = np.array([self.info.width / 2, self.info.height / 2])
        out = np.zeros_like(self.world)
        for t, m in zip(*np.nonzero(self.found)):
            image, world = self.image[t, m, :, :2], self.world[t, m]
            ratios = [
                np.linalg.norm(world[a] - world[b]) / np.linalg.norm(image[a] - image[b])
                for a, b in _SCALE_BONES
                if np.linalg.norm(image[a] - image[b]) > 4
            ]
            if not ratios:
                continue
            metres_per_pixel = float(np.percentile(ratios, 25))  # the least foreshortened bones
            hips = (image[23] + image[24]) / 2
            depth = focal * metres_per_pixel
            root = np.array([*(hips - centre) * metres_per_pixel, depth])
            out[t, m] = world + root
        return out

    def sequence(
        self, coordinates: str = "camera", field_of_view: float = 60.0, label: int | None = None, min_frames: int = 1
    ) -> Sequence:
        """The skeleton sequence (blazepose33; see the module's documentation for
        `coordinates`). Body slots found in fewer than `min_frames` frames are dropped (at
        least one slot is kept); meta: source, name, fps, the frames where nobody was found
        (missing_frames) and the extraction's frames per second."""
        if coordinates not in COORDINATES:
            raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
        if coordinates == "image":
            points = self.image
        else:
            points = self.camera_space(field_of_view) if coordinates == "camera" else self.world
            points = points * np.array([1, -1, 1], dtype=np.float32)  # y up
        keep = [m for m in range(self.found.shape[1]) if self.found[:, m].sum() >= min_frames] or [0]
        present = self.found[:, keep][:, :, None, None]  # absent bodies are zeros
        data = np.ascontiguousarray((points[:, keep] * present).transpose(3, 0, 2, 1), dtype=np.float32)  # C T V M
        meta = {
            "source": self.info.path,
            "name": Path(self.info.path).stem,
            "fps": self.info.fps,
            "missing_frames": [int(t) for t in np.flatnonzero(~self.found.any(axis=1))],
            "extraction_fps": self.frames_per_second,
        }
        if coordinates == "image":
            meta["coordinates"] = "xy"
        return Sequence(data, "blazepose33", label, meta)


def _torso_contains(image: np.ndarray, point: np.ndarray) -> bool:
    """Whether `point` (pixels) lies within a tracked person's torso: closer to its hip centre
    than half the shoulder-to-hip distance."""
    hips, shoulders = (image[23, :2] + image[24, :2]) / 2, (image[11, :2] + image[12, :2]) / 2
    return np.linalg.norm(point - hips) < 0.5 * max(np.linalg.norm(shoulders - hips), 1.0)


def extract_poses(
    path: str | os.PathLike,
    max_people: int = 2,
    landmark_model: str = "full",
    threads: int | None = None,
    progress: bool = False,
    estimator: BlazePose | None = None,
) -> PoseTrack:
    """BlazePose landmarks of up to `max_people` people in every frame of the video at `path`
    (see skelang.video.blazepose for the pipeline). `threads` for the TFLite runtime (default:
    torch's thread count); `progress` shows a bar."""
    import torch
    from tqdm import tqdm

    if max_people < 1:
        raise ValueError(f"max_people must be at least 1, got {max_people}")
    info = video_info(path)
    estimator = estimator or BlazePose(landmark_model, threads or torch.get_num_threads())
    images, worlds, founds = [], [], []
    tracks: dict[int, Region] = {}  # body slot -> the region to look in
    started = time.perf_counter()
    bar = tqdm(total=info.frames or None, disable=not progress, unit="frame", desc=Path(path).name)
    for frame in read_frames(path):
        image = np.zeros((max_people, NUM_LANDMARKS, 3), np.float32)
        world = np.zeros((max_people, NUM_LANDMARKS, 3), np.float32)
        found = np.zeros(max_people, bool)
        for slot in sorted(tracks):  # tracked people first, in slot order (the older first)
            pose = estimator.landmarks(frame, tracks[slot])
            duplicate = pose is not None and any(
                np.median(np.linalg.norm(pose.image[:, :2] - image[other, :, :2], axis=1)) < 0.05 * tracks[slot].size
                for other in np.flatnonzero(found)
            )
            if pose is None or duplicate:
                del tracks[slot]
                continue
            image[slot], world[slot], found[slot] = pose.image, pose.world, True
            tracks[slot] = pose.next_region
        if len(tracks) < max_people:  # look for the people not tracked yet
            for detection in estimator.detect(frame):
                if len(tracks) >= max_people:
                    break
                hip = detection.keypoints[0]
                if any(_torso_contains(image[slot], hip) for slot in np.flatnonzero(found)):
                    continue  # someone already tracked
                slot = min(set(range(max_people)) - set(tracks))
                region = Region.from_points(detection.keypoints[0], detection.keypoints[1])
                pose = estimator.landmarks(frame, region)
                if pose is None:
                    continue
                image[slot], world[slot], found[slot] = pose.image, pose.world, True
                tracks[slot] = pose.next_region
        images.append(image)
        worlds.append(world)
        founds.append(found)
        bar.update()
    bar.close()
    if not founds:
        raise VideoError(f"{path}: no frame could be decoded")
    return PoseTrack(np.stack(images), np.stack(worlds), np.stack(founds), info, time.perf_counter() - started)
