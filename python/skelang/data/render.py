"""`skelang data render`: an animation of one sequence with its bones (matplotlib), as an
animated GIF (Pillow) or MP4 (ffmpeg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skelang.data.layouts import get_layout
from skelang.data.sequence import Sequence


def render_sequence(sequence: Sequence, out: str | Path, fps: float = 15.0, title: str | None = None) -> Path:
    """Draw every frame of `sequence` (3D when it has x y z, 2D for x y score data) and write
    `out` (.gif or .mp4). Bodies absent from a frame are not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import animation

    out = Path(out)
    if out.suffix not in (".gif", ".mp4"):
        raise ValueError(f"{out}: the animation must be a .gif or an .mp4 file")
    layout = get_layout(sequence.layout)
    planar = sequence.meta.get("coordinates") == "xy"
    points = sequence.data[: 2 if planar else 3]  # (D, T, V, M)
    present = np.any(sequence.data != 0, axis=(0, 2))  # (T, M)
    shown = points[:, present.any(1)]
    if planar:  # the limits of the detected joints only
        shown = points[:, sequence.data[2] > 0]
    low, high = shown.reshape(points.shape[0], -1).min(1), shown.reshape(points.shape[0], -1).max(1)
    figure = plt.figure(figsize=(5, 5))
    axes = figure.add_subplot(projection=None if planar else "3d")
    colours = ["tab:blue", "tab:red", "tab:green", "tab:orange"]

    def draw(t):
        axes.cla()
        for m in range(points.shape[3]):
            if not present[t, m]:
                continue
            p = points[:, t, :, m]
            for child, parent in layout.bones:
                if planar and min(sequence.data[2, t, child, m], sequence.data[2, t, parent, m]) <= 0:
                    continue  # an undetected joint (score 0) has no place to draw
                if planar:
                    axes.plot(p[0, [child, parent]], p[1, [child, parent]], color=colours[m % 4])
                else:  # y is up in every 3D layout: draw it as the vertical axis
                    axes.plot(p[0, [child, parent]], p[2, [child, parent]], p[1, [child, parent]], color=colours[m % 4])
        if planar:
            axes.set_xlim(low[0], high[0])
            axes.set_ylim(high[1], low[1])  # image coordinates: y grows downwards
        else:  # seen from the camera (which looks along +z), true proportions
            axes.set_xlim(low[0], high[0])
            axes.set_ylim(low[2], high[2])
            axes.set_zlim(low[1], high[1])
            axes.set_box_aspect(np.maximum(high - low, 1e-3)[[0, 2, 1]])
            axes.view_init(elev=10, azim=-80)
        axes.set_title(f"{title or sequence.meta.get('name', '')}  frame {t + 1}/{sequence.num_frames}")

    movie = animation.FuncAnimation(figure, draw, frames=sequence.num_frames)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    writer = animation.PillowWriter(fps=fps) if out.suffix == ".gif" else animation.FFMpegWriter(fps=fps)
    try:
        movie.save(partial, writer=writer)
        partial.replace(out)
    finally:
        plt.close(figure)
        partial.unlink(missing_ok=True)
    return out
