"""`skelang data inspect` and `skelang data convert`: what a dataset holds, and its
conversion into a cache."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
from tqdm import tqdm

from skelang.data import cache
from skelang.data.readers import detect_format, iter_sequences
from skelang.data.sequence import MissingSkeletonError
from skelang.data.splits import split_of


def inspect_dataset(
    path: str | Path,
    format: str = "auto",
    workers: int = 1,
    benchmark: str | None = None,
    progress: bool = False,
    clips: dict | None = None,
) -> dict:
    """Counts per class, frames min/mean/max, bodies per sequence, layouts; the sequences
    without a skeleton (skipped: MissingSkeletonError), and the bad files or entries with
    their errors (the rest is read). With `benchmark`, only its samples are counted: those
    outside it (an NTU-120 sample in an NTU-60 folder) are left out and counted."""
    kind = detect_format(path) if format == "auto" else format
    per_class = collections.Counter()
    per_split = collections.Counter()
    bodies = collections.Counter()
    layouts = collections.Counter()
    frames, bad, missing, left_out = [], [], [], []
    unlabelled, names = 0, {}
    for item in tqdm(iter_sequences(path, kind, workers, clips), desc="inspect", unit="seq", disable=not progress):
        if isinstance(item, MissingSkeletonError):
            missing.append(str(item))
            continue
        if isinstance(item, ValueError):
            bad.append({"error": str(item)})
            continue
        if benchmark is not None:
            try:
                part = split_of(benchmark, item.meta)
            except ValueError as error:
                bad.append({"error": str(error)})
                continue
            if part is None:
                left_out.append(item.sample_id(len(frames) + len(left_out)))
                continue
            per_split[part] += 1
        if item.label is None:
            unlabelled += 1
        else:
            per_class[item.label] += 1
            name = class_name(item)
            if name is not None:
                names.setdefault(item.label, name)
        frames.append(item.num_frames)
        bodies[item.num_bodies] += 1
        layouts[item.layout] += 1
    report = {
        "path": str(path),
        "format": kind,
        "sequences": len(frames),
        "layouts": dict(layouts),
        "classes": len(per_class),
        "per_class": {str(label): count for label, count in sorted(per_class.items())},
        "class_names": {str(label): name for label, name in sorted(names.items())},
        "unlabelled": unlabelled,
        "frames": (
            {"min": int(np.min(frames)), "mean": float(np.mean(frames)), "max": int(np.max(frames))} if frames else None
        ),
        "bodies": {str(k): v for k, v in sorted(bodies.items())},
        "missing_skeletons": missing,
        "bad_files": bad,
    }
    if benchmark is not None:
        report["split"] = {
            "benchmark": benchmark,
            "train": per_split["train"],
            "test": per_split["test"],
            "outside": len(left_out),
        }
        report["outside_benchmark"] = left_out
    return report


def class_name(sequence) -> str | None:
    """The name of a sequence's class, when its reader or cache knows it."""
    if sequence.meta.get("label_name") is not None:
        return str(sequence.meta["label_name"])
    names = sequence.meta.get("class_names")
    return str(names[sequence.label]) if names is not None and 0 <= sequence.label < len(names) else None


def format_report(report: dict) -> str:
    lines = [
        f"{report['path']}: {report['format']}, {report['sequences']} sequences, "
        f"{report['classes']} classes, layouts {report['layouts']}"
    ]
    if report["frames"]:
        f = report["frames"]
        lines.append(f"frames per sequence: min {f['min']}, mean {f['mean']:.1f}, max {f['max']}")
    lines.append(f"bodies per sequence: {report['bodies']}")
    if "split" in report:
        lines.append(f"split: {report['split']}")
    names = report.get("class_names") or {}
    lines.append(
        "per class: "
        + (", ".join(f"{k}{' ' + names[k] if k in names else ''}: {v}" for k, v in report["per_class"].items()) or "-")
    )
    if report.get("unlabelled"):
        lines.append(f"unlabelled (no class; training needs labels): {report['unlabelled']}")
    if "outside_benchmark" in report:
        lines.append(
            f"left out, outside {report['split']['benchmark']}: {len(report['outside_benchmark'])}"
            + (
                f" ({', '.join(report['outside_benchmark'][:5])}"
                f"{', ...' if len(report['outside_benchmark']) > 5 else ''})"
                if report["outside_benchmark"]
                else ""
            )
        )
    lines.append(f"without a skeleton (skipped): {len(report['missing_skeletons'])}")
    lines += [f"  {error}" for error in report["missing_skeletons"]]
    lines.append(f"bad files or entries: {len(report['bad_files'])}")
    lines += [f"  {bad['error']}" for bad in report["bad_files"]]
    return "\n".join(lines)


def convert_dataset(
    path: str | Path,
    out: str | Path,
    format: str = "auto",
    workers: int = 1,
    benchmark: str | None = None,
    part: str | None = None,
    progress: bool = True,
    force: bool = False,
    clips: dict | None = None,
    skip_invalid: bool = False,
) -> dict:
    """Read every sequence at `path` (optionally one part of a benchmark split) into a cache
    folder `out`. Clips without a skeleton (MissingSkeletonError) are skipped and listed under
    "skipped"; any other bad file or entry (a ValueError naming it) stops the conversion with
    its error and writes nothing, unless `skip_invalid`: then it is left out and its error
    listed under "invalid" (as `inspect` lists them). `out` must be new, an empty folder, or
    (with `force`) a skelang cache, and never the input or a folder holding it."""
    if not (str(path) == "synthetic" or str(path).startswith("synthetic:")):  # the built-in set has no files
        source, target = Path(path).resolve(), Path(out).resolve()
        if not source.exists():
            raise ValueError(f"{path}: no such file or folder")
        if source == target or target in source.parents:
            raise ValueError(f"--out {out}: the output would replace the input {path}; choose another folder")
        if source in target.parents:
            raise ValueError(
                f"--out {out}: inside the input folder {path}, where the cache's files would be read as data; "
                f"choose a folder outside it"
            )
    cache.check_cache_destination(out, force)
    kind = detect_format(path) if format == "auto" else format
    skipped, left_out, invalid = [], [], []

    def sequences():
        for item in tqdm(iter_sequences(path, kind, workers, clips), desc="convert", unit="seq", disable=not progress):
            if isinstance(item, MissingSkeletonError):
                skipped.append(str(item))
                continue
            if isinstance(item, ValueError):
                if not skip_invalid:
                    raise ValueError(
                        f"{item} (nothing written; --skip-invalid, or skip_invalid=True in Python, leaves out bad "
                        f"entries)"
                    ) from None
                invalid.append(str(item))
                continue
            where = None if benchmark is None else split_of(benchmark, item.meta)
            if benchmark is not None and where is None:
                left_out.append(item.sample_id(len(left_out)))
                continue
            if benchmark is None or where == part:
                yield item

    try:
        folder = cache.write_cache(sequences(), out, overwrite=force)
    except ValueError as error:
        if "no sequence to cache" not in str(error):
            raise
        reasons = [f"{len(skipped)} without a skeleton"] if skipped else []
        if invalid:
            reasons.append(f"{len(invalid)} invalid, the first: {invalid[0]}")
        if left_out:
            reasons.append(f"{len(left_out)} outside {benchmark}")
        if benchmark is not None:
            reasons.append(f"none in the {part} part of {benchmark}")
        raise ValueError(
            f"{path}: no sequence to write to {out}" + (f" ({'; '.join(reasons)})" if reasons else "")
        ) from None
    return {
        "cache": str(folder),
        "sequences": len(cache.SequenceCache(folder, verify=False)),
        "skipped": skipped,
        "invalid": invalid,
        "outside_benchmark": left_out,
    }
