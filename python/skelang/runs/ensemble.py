"""Multi-stream ensembles (HocSLM's six streams; InfoGCN and HD-GCN practice): the per-sample
scores of several runs fused by sample id, never by position.

Each run's final evaluation writes scores.npz (ids, labels, logits); `skelang eval RUN --data
VAL --scores FILE` writes another split's. `ensemble(sources)` aligns the runs by sample id (a
run missing a sample, or holding an extra one, is an error naming the ids), reports each run,
each stream's mean and spread over seeds, and the fused top-1 / top-5 of the weighted sum of
the runs' logits (as CTR-GCN's ensemble.py sums its streams' scores). Weights are given, or
searched on validation scores of the same runs (`search=`), never on the test set.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path

import numpy as np

from skelang.runs.directory import SCORES, RunDirectory

WEIGHT_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)


@dataclasses.dataclass
class Scores:
    """One run's per-sample outputs on one split."""

    source: str
    stream: str
    seed: int | None
    ids: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64
    logits: np.ndarray  # (N, classes) float32
    run: str | None = None  # the run folder that wrote them (absolute), where known
    checkpoint: str | None = None  # the sha256 of the checkpoint that scored them, where known


def load_scores(source: str | os.PathLike) -> Scores:
    """A run folder's scores.npz (its stream and seed from its config; a VST or language-model
    run's stream is named by its stage too, "lm:joint", apart from an encoder's "joint"), or a
    scores .npz file (its stream: the file's stem)."""
    path = Path(source)
    stream, seed, origin, digest = path.stem, None, None, None
    if path.name == SCORES and RunDirectory(path.parent).exists():  # RUN/scores.npz: the run's own
        path = path.parent
    if path.is_dir():
        run = RunDirectory(path)
        origin, digest = str(run.path.resolve()), run.checkpoint_digest()
        config = run.config
        stream, seed = "+".join(config["data"]["streams"]), config["seed"]
        if config.get("stage") in ("vst", "lm"):
            stream = f"{config['stage']}:{stream}"
        path = run.file(SCORES)
        if not path.is_file():
            raise ValueError(f"{source}: no {SCORES} (evaluate the run: skelang eval {source})")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            ids, labels, logits = (arrays[key] for key in ("ids", "labels", "logits"))
            if origin is None and "run" in arrays.files:  # a --scores file names its run and weights
                origin = str(arrays["run"])
                digest = str(arrays["checkpoint"]) if "checkpoint" in arrays.files else None
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise ValueError(f"{path}: not a scores file with ids, labels and logits ({error})") from None
    if logits.ndim != 2 or len(ids) != len(logits) or len(labels) != len(logits):
        raise ValueError(f"{path}: ids {ids.shape}, labels {labels.shape} and logits {logits.shape} do not match")
    if not np.isfinite(logits).all():
        raise ValueError(f"{path}: logits hold NaN or infinite values (a run that diverged?); no ensemble of them")
    if len(set(ids.tolist())) != len(ids):
        raise ValueError(f"{path}: sample ids repeat; an ensemble matches samples by id")
    return Scores(
        str(source), stream, seed, ids.astype(str), labels.astype(np.int64), logits.astype(np.float32), origin, digest
    )


def align(scores: list[Scores]) -> list[Scores]:
    """The runs' scores in the first run's sample order; a sample missing from a run, or an
    extra one, is a ValueError naming the ids."""
    if not scores:
        raise ValueError("an ensemble needs at least one run")
    first = scores[0]
    order = {sample: i for i, sample in enumerate(first.ids)}
    aligned = [first]
    for other in scores[1:]:
        missing = sorted(set(first.ids) - set(other.ids))
        extra = sorted(set(other.ids) - set(first.ids))
        if missing or extra:
            raise ValueError(
                f"{other.source} holds other samples than {first.source}: "
                + (f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} " if missing else "")
                + (f"extra {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}" if extra else "")
            )
        index = np.array([order[sample] for sample in other.ids])
        permutation = np.empty_like(index)
        permutation[index] = np.arange(len(index))
        labels, logits = other.labels[permutation], other.logits[permutation]
        if not np.array_equal(labels, first.labels):
            wrong = first.ids[labels != first.labels][:5]
            raise ValueError(f"{other.source}: labels differ from {first.source}'s for {', '.join(wrong)}")
        if logits.shape[1] != first.logits.shape[1]:
            raise ValueError(f"{other.source}: {logits.shape[1]} classes, {first.source} {first.logits.shape[1]}")
        aligned.append(dataclasses.replace(other, ids=first.ids, labels=labels, logits=logits))
    return aligned


def top_k(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """As skelang.runs.metrics.top_k_accuracy: equal logits rank the lower class index first."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def fuse(scores: list[Scores], weights) -> np.ndarray:
    """The weighted sum of the aligned runs' logits."""
    return sum(w * s.logits for w, s in zip(weights, scores))


def search_weights(validation: list[Scores], grid=WEIGHT_GRID) -> list[float]:
    """The weights (one per run, from `grid`, not all zero) whose fused validation top-1 is
    best; among equals, those nearest to equal weights."""
    validation = align(validation)
    best, best_key = None, None
    for weights in itertools.product(grid, repeat=len(validation)):
        if not any(weights):
            continue
        accuracy = top_k(fuse(validation, weights), validation[0].labels, 1)
        spread = float(np.std(np.array(weights) / max(weights)))
        key = (accuracy, -spread)
        if best_key is None or key > best_key:
            best, best_key = list(weights), key
    return best


def ensemble(sources: list, weights: list[float] | None = None, search: list | None = None) -> dict:
    """The report of an ensemble of `sources` (run folders or scores files) on their test
    scores: each run, each stream over seeds, the weights (given, searched on the `search`
    sources' validation scores, one per source in the same order, or equal) and the fused
    top-1 / top-5."""
    _no_repeats(sources, "run")
    scores = align([load_scores(source) for source in sources])
    if weights is not None and search is not None:
        raise ValueError("give weights or search them on validation scores, not both")
    weights_from = "validation search" if search is not None else "given" if weights is not None else "equal"
    if weights is not None:
        if len(weights) != len(scores):
            raise ValueError(f"{len(weights)} weights for {len(scores)} runs")
        weights = [float(w) for w in weights]
        if not all(np.isfinite(w) and w >= 0 for w in weights) or not any(weights):
            raise ValueError(f"weights {weights}: expected numbers >= 0, not all 0")
    if search is not None:
        if len(search) != len(scores):
            raise ValueError(f"{len(search)} validation sources for {len(scores)} runs (one per run, same order)")
        _no_repeats(search, "validation source")
        validation = [load_scores(source) for source in search]
        for test, valid, name in zip(scores, validation, search):
            _check_same_weights(test, valid, name)
        shared = sorted(set(validation[0].ids.tolist()) & set(scores[0].ids.tolist()))
        if shared:
            raise ValueError(
                f"{search[0]} shares {len(shared)} samples with the test scores of {sources[0]} "
                f"({', '.join(shared[:3])}{' ...' if len(shared) > 3 else ''}): search the weights on "
                f"another split (skelang eval RUN --data VALIDATION --scores FILE), never on the test set"
            )
        weights = search_weights(validation)
    weights = [1.0] * len(scores) if weights is None else weights
    labels = scores[0].labels
    runs = [
        {
            "source": s.source,
            "stream": s.stream,
            "seed": s.seed,
            "weight": w,
            "top1": top_k(s.logits, labels, 1),
            "top5": top_k(s.logits, labels, 5),
        }
        for s, w in zip(scores, weights)
    ]
    streams = {}
    for run in runs:
        streams.setdefault(run["stream"], []).append(run["top1"])
    fused = fuse(scores, weights)
    return {
        "samples": len(labels),
        "runs": runs,
        "streams": {
            name: {
                "runs": len(values),
                "mean_top1": float(np.mean(values)),
                "std_top1": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            }
            for name, values in streams.items()
        },
        "weights": weights,
        "weights_from": weights_from,
        "top1": top_k(fused, labels, 1),
        "top5": top_k(fused, labels, 5),
    }


def _check_same_weights(test: Scores, valid: Scores, name: str) -> None:
    """Validation scores weigh the run whose weights scored them: the same checkpoint (its
    sha256, wherever the run folder is now), or, for files without one, the same run folder."""
    if test.checkpoint is not None and valid.checkpoint is not None:
        if test.checkpoint != valid.checkpoint:
            raise ValueError(
                f"{name} holds scores of other weights than {test.source}'s (checkpoint sha256 "
                f"{valid.checkpoint[:12]}..., the run's is {test.checkpoint[:12]}...; written by {valid.run}): "
                f"another run, or the run trained on since; give one validation file per run, in the runs' "
                f"order, scored by its final weights (skelang eval RUN --data VALIDATION --scores FILE)"
            )
    elif test.run is not None and valid.run is not None and test.run != valid.run:
        raise ValueError(
            f"{name} holds the validation scores of {valid.run}, not of {test.source}: "
            f"give one validation file per run, in the runs' order"
        )


def _no_repeats(sources: list, what: str) -> None:
    """The same run (or file) twice would count one model as two."""
    resolved = [(Path(source) / SCORES if Path(source).is_dir() else Path(source)).resolve() for source in sources]
    repeated = sorted({str(source) for source, path in zip(sources, resolved) if resolved.count(path) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)}: the same {what} twice; give each one once")


def format_report(report: dict) -> str:
    lines = [f"{'run':<40} {'stream':<16} {'seed':>4} {'weight':>6} {'top-1':>7} {'top-5':>7}"]
    for run in report["runs"]:
        lines.append(
            f"{run['source'][-40:]:<40} {run['stream']:<16} {run['seed'] if run['seed'] is not None else '-':>4}"
            f" {run['weight']:>6.2f} {run['top1']:>7.2%} {run['top5']:>7.2%}"
        )
    for name, stream in report["streams"].items():
        lines.append(
            f"stream {name}: {stream['mean_top1']:.2%} +- {stream['std_top1']:.2%} over {stream['runs']} "
            f"run{'s' if stream['runs'] != 1 else ''}"
        )
    count = len(report["runs"])
    lines.append(
        f"ensemble of {count} run{'s' if count != 1 else ''} ({report['weights_from']} weights) on "
        f"{report['samples']} samples: top-1 {report['top1']:.2%}, top-5 {report['top5']:.2%}"
    )
    return "\n".join(lines)
