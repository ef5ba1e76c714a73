"""`skelang predict RUN VIDEO`: from a video to the action, with a trained run of any stage.

video -> BlazePose skeletons of up to the run's number of bodies (skelang.video) -> the run's
skeleton layout (skelang.data.mapping) -> windows of `window` frames every `stride` frames
(default: the whole video) -> the run's evaluation preprocessing -> its model:

- encoder, SSF runs: the top-5 classes with their probabilities, per window;
- VST runs: the same, with the window's action narrative and the glossary line of each token;
- language-model runs: the language model's class probabilities (by class-name likelihood),
  the narrative, the glossary lines and its explanation of the top class.

`render` writes the video with the skeletons and each window's top class drawn on it (mp4).
The class names come from the run's checkpoint (stored there since runs keep them), else from
its data (see skelang.runs.stages.encoder.dataset_class_names) or its descriptions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from skelang.data.mapping import map_layout
from skelang.data.sequence import Sequence
from skelang.runs.directory import open_run


def _fit_bodies(sequence: Sequence, bodies: int) -> Sequence:
    """The `bodies` body slots found in most frames (in their slot order), zero-padded."""
    data = sequence.data
    present = np.abs(data).sum(axis=(0, 2)) > 0  # (T, M)
    chosen = sorted(np.argsort(-present.sum(axis=0), kind="stable")[:bodies].tolist())
    out = np.zeros((*data.shape[:3], bodies), dtype=data.dtype)
    out[..., : len(chosen)] = data[..., chosen]
    return Sequence(out, sequence.layout, sequence.label, sequence.meta)


def windows(sequence: Sequence, window: int | None, stride: int | None) -> list[tuple[int, int]]:
    """[start, end) frame ranges: the whole sequence, or `window` frames every `stride` (default
    window // 2) frames, the last one ending at the last frame."""
    total = sequence.num_frames
    if window is not None and window < 1:
        raise ValueError(f"--window must be a positive number of frames, got {window}")
    if stride is not None and stride < 1:
        raise ValueError(f"--stride must be a positive number of frames, got {stride}")
    if window is None or window >= total:
        return [(0, total)]
    stride = stride if stride is not None else max(1, window // 2)
    starts = list(range(0, total - window + 1, stride))
    if starts[-1] + window < total:
        starts.append(total - window)
    return [(start, start + window) for start in starts]


def _top(probabilities: torch.Tensor, names: list[str], k: int = 5) -> list[dict]:
    values, labels = probabilities.topk(min(k, len(probabilities)))
    return [
        {"label": int(label), "name": names[label], "probability": float(value)}
        for value, label in zip(values.tolist(), labels.tolist())
    ]


def predict_video(
    run_dir: str | os.PathLike,
    video: str | os.PathLike,
    window: int | None = None,
    stride: int | None = None,
    max_people: int | None = None,
    landmark_model: str = "full",
    render: str | os.PathLike | None = None,
    progress: bool = False,
    coordinates: str = "camera",
) -> dict:
    """The run's answer for the video (see the module's documentation): a dict with the run's
    stage, the video's frames and fps, the pose extraction (people per frame, frames per
    second) and one entry per window (frames, top-5, and per stage narrative, glossary,
    explanation). `coordinates` as skelang.video.extract (camera, world, image): those of the
    data the run was trained on (`skelang data extract --coordinates`)."""
    from skelang.video.extract import extract_poses
    from skelang.video.render import check_render_target

    if render is not None:  # before the extraction, which takes minutes
        check_render_target(video, render)

    run = open_run(run_dir)
    config = run.config
    stage = config["stage"]
    checkpoint_shape = _run_shape(run)
    poses = extract_poses(
        video, max_people=max_people or checkpoint_shape["num_bodies"], landmark_model=landmark_model, progress=progress
    )
    sequence = poses.sequence(coordinates)
    if not poses.found.any():
        raise ValueError(f"{video}: nobody was found in any frame")
    mapped = _fit_bodies(map_layout(sequence, checkpoint_shape["layout"]), checkpoint_shape["num_bodies"])
    parts = [
        (
            start,
            end,
            Sequence(
                mapped.data[:, start:end].copy(),
                mapped.layout,
                None,
                {**mapped.meta, "name": f"{mapped.meta['name']}[{start}:{end}]"},
            ),
        )
        for start, end in windows(mapped, window, stride)
    ]
    if stage == "lm":
        results = _predict_language(run.path, [part for _, _, part in parts])
    else:
        results = _predict_encoder(run, [part for _, _, part in parts])
    report = {
        "run": str(run.path),
        "stage": stage,
        "video": str(video),
        "frames": int(len(poses.found)),
        "fps": poses.info.fps,
        "layout": checkpoint_shape["layout"],
        "people_per_frame": np.bincount(poses.found.sum(axis=1), minlength=poses.found.shape[1] + 1).tolist(),
        "extraction_fps": poses.frames_per_second,
        "windows": [{"start": start, "end": end, **result} for (start, end, _), result in zip(parts, results)],
    }
    if render is not None:
        from skelang.video.render import render_video

        labels = [
            (w["start"], w["end"], f"{w['top5'][0]['name']} {w['top5'][0]['probability']:.0%}")
            for w in report["windows"]
        ]
        report["render"] = str(render_video(video, poses, render, labels))
    return report


def _run_shape(run) -> dict:
    """layout, num_bodies, num_classes of the run's encoder (an lm run's: its VST run's)."""
    from skelang.runs.stages.encoder import checkpoint_layout

    if run.config["stage"] == "lm":
        run = open_run(run.config["lm"]["vst_run"])
    checkpoint = run.load_checkpoint()
    checkpoint_layout(run, checkpoint)  # a layout made at run time, registered
    return {key: checkpoint[key] for key in ("layout", "num_bodies", "num_classes")}


def _class_names(stage, count: int) -> list[str]:
    """The run's class names: kept in its checkpoint, else those of its data's benchmark or
    descriptions, else "class i"."""
    from skelang.runs.stages.encoder import dataset_class_names

    names = stage.class_names(count) or dataset_class_names(stage.config["data"], [], count)
    section = stage.config.get("ssf") or {}
    if names is None and section.get("descriptions"):
        from skelang.fusion.descriptions import load_descriptions

        names = load_descriptions(section["descriptions"]).names()
    return names if names is not None and len(names) == count else [f"class {i}" for i in range(count)]


def _predict_encoder(run, sequences: list[Sequence]) -> list[dict]:
    from skelang.data.dataset import make_loader
    from skelang.runs.stages import STAGES

    stage = STAGES[run.stage].load(run, "cpu")
    loader = make_loader(stage.dataset(sequences), 16, shuffle=False)
    names = _class_names(stage, stage.shape["num_classes"])
    results = []
    with torch.no_grad(), stage.autocast():
        for inputs, _ in loader:
            for probabilities in stage.model(inputs).float().softmax(1):
                results.append({"top5": _top(probabilities, names)})
        if run.stage == "vst":
            _add_narratives(stage.model, loader, results, run.path)
    return results


def _add_narratives(model, loader, results: list[dict], vst_run) -> None:
    from skelang.runs.stages.vst import glossary
    from skelang.vst.glossary import glossary_lines
    from skelang.vst.narrative import format_narrative

    entries = glossary(vst_run)
    runs = [runs for inputs, _ in loader for runs in model.tokenize(inputs)]
    for result, token_runs in zip(results, runs):
        result["narrative"] = format_narrative(token_runs)
        result["glossary"] = glossary_lines(result["narrative"], entries)


def _predict_language(run_dir: Path, sequences: list[Sequence]) -> list[dict]:
    from skelang.runs.stages.lm import explanation_decoding, load_language_run, narrate
    from skelang.runs.stages.vst import glossary
    from skelang.vst.glossary import glossary_lines

    model, config, vst_model = load_language_run(run_dir)
    samples = narrate(vst_model, sequences, config["data"])
    probabilities = model.class_log_likelihoods(samples).softmax(1)
    predicted = probabilities.argmax(1).tolist()
    explanations = model.explain(samples, predicted, **explanation_decoding(config["lm"]))
    entries = glossary(config["lm"]["vst_run"])
    results = []
    for sample, row, text in zip(samples, probabilities, explanations):
        narrative = sample.narrative()
        results.append(
            {
                "top5": _top(row, list(model.class_names)),
                "narrative": narrative,
                "glossary": glossary_lines(narrative, entries),
                "explanation": text,
                "encoder_top1": model.class_names[sample.encoder_predicted],
            }
        )
    return results
