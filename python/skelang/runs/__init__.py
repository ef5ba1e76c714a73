"""Runs: configurations, the run folder, the stages and the one training loop.

load_config(path, overrides)          a YAML configuration (or a shipped config's name), checked
train(config, out_dir, resume=False)  a run of the config's stage: log, metrics, resumable checkpoints
evaluate_run(run_dir, data=None)      the metrics of a finished run's checkpoint
open_run(run_dir)                     a RunDirectory: config, checkpoint, log, metrics, scores
"""

from __future__ import annotations

from pathlib import Path

from skelang.runs.config import RunConfig, load_config, resolve_config, shipped_configs
from skelang.runs.directory import RunDirectory, check_outside_run, open_run, save_scores
from skelang.runs.distributed import is_main_process, select_device
from skelang.runs.ensemble import ensemble
from skelang.runs.loop import fit
from skelang.runs.metrics import classification_metrics
from skelang.runs.stages import STAGES, EncoderStage
from skelang.runs.stages.encoder import load_sequences


def train(config: dict, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Trains the stage of `config` (resolved or raw) into the run folder `out_dir` and returns
    the final metrics. With `resume`, continues the run there from its checkpoint (a finished
    run returns its metrics)."""
    config = resolve_config(config)
    return fit(STAGES[config["stage"]], config, RunDirectory(out_dir), resume, progress)


def train_streams(config: dict, streams: list[str], out_dir: str | Path, progress: bool = True) -> dict:
    """One run per input stream of `config` (its data.streams replaced), one after another in
    out_dir/<stream> (a run already there resumes, or is kept when finished), then their
    ensemble with equal weights, written to out_dir/ensemble.json. Returns the ensemble's
    report."""
    import json

    from skelang.data.preprocess import STREAMS
    from skelang.files import write_text_atomic
    from skelang.runs.ensemble import ensemble

    if not streams:
        raise ValueError(f"--streams: no stream given (all, or some of {', '.join(STREAMS)})")
    unknown = [stream for stream in streams if stream not in STREAMS]
    if unknown:
        raise ValueError(f"--streams: unknown stream {unknown} (known: all, or some of {', '.join(STREAMS)})")
    twice = sorted({stream for stream in streams if streams.count(stream) > 1})
    if twice:
        raise ValueError(f"--streams: {', '.join(twice)} given twice; give each stream once")
    config = resolve_config(config)
    out_dir = Path(out_dir)
    for stream in streams:
        run = RunDirectory(out_dir / stream)
        stream_config = {**config, "data": {**config["data"], "streams": [stream]}}
        if progress and is_main_process():
            print(f"stream {stream}: {run.path}")
        fit(STAGES[config["stage"]], stream_config, run, resume=run.file("checkpoint.pt").is_file(), progress=progress)
    report = ensemble([out_dir / stream for stream in streams])
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / "ensemble.json", json.dumps(report, indent=2) + "\n")
    return report


def evaluate_run(
    run_dir: str | Path,
    data: str | None = None,
    device: str = "auto",
    zero_shot: bool = True,
    unseen: list[int] | None = None,
    calibration: float = 0.0,
    write_scores: bool = True,
    scores_path: str | Path | None = None,
) -> dict:
    """Metrics of the final checkpoint of an encoder, SSF or VST run on its test data, or on
    all of the sequences at `data` (any path open_sequences accepts). The per-sample scores go
    to the run's scores.npz (of its test data; scores_<name>.npz never: other data is not
    written there; `scores_path` writes the per-sample scores of any data to that file). For
    an SSF run, `unseen` replaces the run's unseen classes in the zero-shot metrics, and
    `calibration` is subtracted from the seen classes' logits in their GZSL part."""
    from skelang.data.readers import open_sequences_for

    run = open_run(run_dir)
    stage_class = STAGES[run.stage]
    if not issubclass(stage_class, EncoderStage):
        raise ValueError(f"{run.path}: a {run.stage} run; its metrics come from skelang.runs.stages.lm")
    if unseen is not None and run.stage != "ssf":
        raise ValueError(f"{run.path}: zero-shot classes apply to SSF runs (stage ssf)")
    if scores_path is not None:
        check_outside_run(run, scores_path)
    with run.lock():
        stage = stage_class.load(run, select_device(device))
        sequences = (
            load_sequences(stage.config["data"])[1] if data is None else open_sequences_for(data, stage.shape["layout"])
        )
        options = {"zero_shot": zero_shot, "calibration": calibration, "unseen": unseen} if run.stage == "ssf" else {}
        metrics = stage.evaluate_sequences(sequences, write_scores=write_scores and data is None, **options)
        metrics["class_names"] = stage.class_names(stage.shape["num_classes"])  # None when unknown
    if scores_path is not None:
        metrics["scores"] = str(write_scores_file(scores_path, sequences, stage))
    return metrics


def write_scores_file(path: str | Path, sequences, stage) -> Path:
    """The per-sample scores of `sequences` by a loaded stage, to `path` (.npz: ids, labels,
    logits), written whole; never over a run's own files."""
    from skelang.data.dataset import make_loader
    from skelang.runs.stages.encoder import predict

    path = Path(path)
    loader = make_loader(
        stage.dataset(sequences),
        stage.config["train"]["test_batch_size"],
        shuffle=False,
        num_workers=stage.num_workers,
    )
    with stage.autocast():
        logits, labels = predict(stage.model, loader, stage.device)
    ids = [sequence.sample_id(i) for i, sequence in enumerate(sequences)]
    return save_scores(path, ids, labels, logits, run=stage.run)


__all__ = [
    "RunConfig",
    "RunDirectory",
    "STAGES",
    "classification_metrics",
    "ensemble",
    "evaluate_run",
    "load_config",
    "open_run",
    "resolve_config",
    "shipped_configs",
    "train",
    "train_streams",
]
