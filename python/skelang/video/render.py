"""A video with its skeletons and labels drawn on it (OpenCV; MPEG-4 in .mp4, or any suffix
OpenCV writes), written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from skelang.data.layouts import get_layout
from skelang.files import share_as_new
from skelang.video.extract import PoseTrack, VideoError, _cv2, read_frames

COLOURS = [(0, 90, 255), (255, 120, 0), (0, 200, 80), (200, 0, 200)]  # BGR, one per body slot
CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mov": "mp4v", ".mkv": "mp4v"}


def check_render_target(video: str | os.PathLike, out: str | os.PathLike) -> str:
    """The codec of the video file `out` (by its suffix); a ValueError when it is the input
    video itself or of a kind OpenCV is not asked to write."""
    out = Path(out)
    if out.resolve() == Path(video).resolve():
        raise ValueError(f"--render {out}: the input video itself; choose another file")
    codec = CODECS.get(out.suffix.lower())
    if codec is None:
        raise ValueError(f"--render {out}: expected one of {', '.join(CODECS)}")
    return codec


def render_video(
    video: str | os.PathLike,
    poses: PoseTrack,
    out: str | os.PathLike,
    labels: list[tuple[int, int, str]] = (),
    min_visibility: float = 0.3,
) -> Path:
    """`video` with each body's BlazePose bones (landmarks of visibility >= `min_visibility`)
    and, on the frames of each (start, end, text) in `labels`, the text, written to `out`."""
    cv2 = _cv2()
    out = Path(out)
    codec = check_render_target(video, out)
    layout = get_layout("blazepose33")
    bones = [(joint, parent) for joint, parent in enumerate(layout.parents) if parent >= 0]
    info = poses.info
    scale = max(1, round(info.height / 540))
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix, dir=out.parent)
    share_as_new(handle)
    os.close(handle)
    writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*codec), info.fps or 30.0, (info.width, info.height))
    try:
        if not writer.isOpened():
            raise VideoError(f"--render {out}: OpenCV cannot write {codec} video here")
        for t, frame in enumerate(read_frames(video)):
            canvas = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            if t < len(poses.found):
                for m in np.flatnonzero(poses.found[t]):
                    points = poses.image[t, m]
                    for joint, parent in bones:
                        if min(points[joint, 2], points[parent, 2]) >= min_visibility:
                            cv2.line(
                                canvas,
                                tuple(int(v) for v in points[joint, :2]),
                                tuple(int(v) for v in points[parent, :2]),
                                COLOURS[m % len(COLOURS)],
                                2 * scale,
                            )
            text = " | ".join(label for start, end, label in labels if start <= t < end)
            if text:
                for colour, thickness in (((0, 0, 0), 4), ((255, 255, 255), 2)):  # white on a black outline
                    cv2.putText(
                        canvas,
                        text,
                        (20 * scale, 40 * scale),
                        cv2.FONT_HERSHEY_SIMPLEX,
                        1.0 * scale,
                        colour,
                        thickness * scale,
                        cv2.LINE_AA,
                    )
            writer.write(canvas)
        writer.release()
        os.replace(temporary, out)
    finally:
        writer.release()
        if os.path.exists(temporary):
            os.unlink(temporary)
    return out
