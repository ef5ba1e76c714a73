"""Figures of runs (matplotlib, written whole or not at all): training curves of one or several
runs, and a run's confusion matrix with its class names.

    curves.png      loss, train and test top-1, learning rate, by epoch (or wall-clock minutes)
    confusion.png   the final evaluation's confusion matrix, each row as fractions of its class

A finished run writes both (skelang.runs.loop); `skelang plot RUN...` draws several runs' curves
on one figure.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from skelang.files import atomic_open
from skelang.runs.compare import cumulative_minutes

CURVES = "curves.png"
CONFUSION = "confusion.png"
AXES = ("epoch", "minutes")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | os.PathLike) -> Path:
    """Writes a figure (its format from the suffix: .png, .pdf, .svg) whole or not at all."""
    path = Path(path)
    buffer = io.BytesIO()
    kind = path.suffix.lstrip(".").lower() or "png"
    try:
        if kind not in figure.canvas.get_supported_filetypes():
            raise ValueError(f"{path}: matplotlib writes no .{kind} figures; name a .png, .pdf or .svg file")
        figure.savefig(buffer, format=kind, dpi=120, bbox_inches="tight")
    finally:
        _pyplot().close(figure)
    with atomic_open(path, "wb") as file:
        file.write(buffer.getvalue())
    return path


def plot_curves(logs: dict[str, list[dict]], out: str | os.PathLike, x: str = "epoch") -> Path:
    """Training curves of runs, one colour per run: `logs` maps a label to a run's log entries
    (log.jsonl's lines). Panels: loss, top-1 (train dashed, test solid, in %) and learning
    rate, against the epoch or (x="minutes") the cumulative wall-clock minutes."""
    if x not in AXES:
        raise ValueError(f"x must be one of {AXES}, got {x!r}")
    plt = _pyplot()
    figure, (loss_axis, top1_axis, lr_axis) = plt.subplots(1, 3, figsize=(15, 4))
    for index, (label, entries) in enumerate(logs.items()):
        colour = f"C{index % 10}"
        if x == "epoch":
            position = [entry["epoch"] for entry in entries]
        else:
            position = cumulative_minutes(entries)
        loss_axis.plot(position, [entry["loss"] for entry in entries], color=colour, label=label)
        for key, style in (("train_top1", "--"), ("test_top1", "-")):
            points = [(p, 100 * entry[key]) for p, entry in zip(position, entries) if entry.get(key) is not None]
            if points:
                top1_axis.plot(
                    *zip(*points),
                    style,
                    color=colour,
                    marker="." if style == "-" else None,
                    label=f"{label} ({key.split('_')[0]})",
                )
        lr_axis.plot(position, [entry["lr"] for entry in entries], color=colour, label=label)
    for axis, title in ((loss_axis, "training loss"), (top1_axis, "top-1 (%)"), (lr_axis, "learning rate")):
        axis.set_title(title)
        axis.set_xlabel("epoch" if x == "epoch" else "wall-clock minutes")
        axis.grid(alpha=0.3)
    top1_axis.legend(fontsize=8)
    if len(logs) > 1:
        loss_axis.legend(fontsize=8)
    return _save(figure, out)


def plot_confusion(matrix, class_names: list[str] | None, out: str | os.PathLike, title: str = "") -> Path:
    """The confusion matrix (rows: true class, columns: predicted), each row as fractions of its
    class's samples, with the class names (or numbers) on the axes."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {matrix.shape}")
    count = len(matrix)
    names = list(class_names) if class_names is not None else [str(i) for i in range(count)]
    if len(names) != count:
        raise ValueError(f"{len(names)} class names for a confusion matrix of {count} classes")
    totals = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    plt = _pyplot()
    size = min(4 + 0.3 * count, 30)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    font = max(3, min(9, 300 / count))
    axis.set_xticks(range(count), names, rotation=90, fontsize=font)
    axis.set_yticks(range(count), names, fontsize=font)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if count <= 30:
        for row in range(count):
            for column in range(count):
                if matrix[row, column]:
                    axis.text(
                        column,
                        row,
                        f"{fractions[row, column]:.2f}".lstrip("0"),
                        ha="center",
                        va="center",
                        fontsize=font * 0.8,
                        color="white" if fractions[row, column] > 0.5 else "black",
                    )
    top1 = np.trace(matrix) / max(matrix.sum(), 1)
    axis.set_title((title + ": " if title else "") + f"top-1 {top1:.2%} over {int(matrix.sum())} samples")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    return _save(figure, out)
