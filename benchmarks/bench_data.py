"""Data: the C++ .skeleton parser against a pure-Python reader of the same format; reading
and preprocessing with the C++/Eigen geometry against the numpy reference; a whole dataset
from its cache against reading it from the raw archive; and a recipe's training loader against
the training step it feeds (its "speedup" is how many times faster the loader gives a batch
than the model trains on it: under 1, loading holds the training back; with no DataLoader
workers, which the thread budget gives on two cores, an epoch takes the sum of both).

Cases whose files are missing (../shared/data) are left out with a note on stderr."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from harness import Case

from skelang import _C
from skelang.data import cache, nw_ucla
from skelang.data.layouts import get_layout
from skelang.data.ntu import read_ntu_skeleton
from skelang.data.preprocess import Preprocess
from skelang.reference import preprocess as numpy_geometry
from skelang.reference.ntu_skeleton import parse_ntu_skeleton as parse_python

REPO = Path(__file__).resolve().parents[1]


def _numpy_preprocess(data: np.ndarray, layout_name: str, num_frames: int) -> np.ndarray:
    """The evaluation path of Preprocess (drop empty frames, normalise, resample, joint
    stream) with the numpy reference of each step."""
    layout = get_layout(layout_name)
    data = data[:, numpy_geometry.present_frames(data)]
    data, _ = numpy_geometry.normalize_skeleton(data, layout.centre, *layout.spine, *layout.shoulders)
    T = data.shape[1]
    data = numpy_geometry.resample_frames(data, 0.0, (T - 1) / (num_frames - 1), num_frames)
    return numpy_geometry.compute_stream(data, "joint", layout.parents, layout.centre)


def _loader_case(section: dict, device: torch.device) -> Case | None:
    """One batch of the training loader of `section["config"]` (built as `skelang train` builds
    it, its workers from the thread budget) against one training step of the model on it."""
    from skelang.runs.config import load_config
    from skelang.runs.directory import RunDirectory
    from skelang.runs.stages.encoder import EncoderStage
    from skelang.threads import ThreadBudget

    train = section["train"]
    if not train.startswith("synthetic:"):
        train = str(REPO / train)
        if not Path(train).exists():
            print(f"bench_data: {train} not found, the loader case left out", file=sys.stderr)
            return None
    config = load_config(section["config"], [f"data.train={train}", *section.get("overrides", [])])
    budget = ThreadBudget(config["train"]["threads"], config["data"]["num_workers"])
    run = RunDirectory(Path(tempfile.mkdtemp(prefix="skelang-bench-")) / "run")
    stage = EncoderStage(config, run, device, progress=False, budget=budget)
    stage.build()
    stage.set_epoch(0)
    batches = iter(stage.batches(0))

    def next_batch():
        nonlocal batches
        batch = next(batches, None)
        if batch is None:  # the epoch ended: the next one (persistent workers carry on)
            batches = iter(stage.batches(0))
            batch = next(batches)
        return batch

    batch = next_batch()
    optimizer = torch.optim.SGD(stage.model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        stage.training_step(batch).loss.backward()
        optimizer.step()

    size = config["train"]["batch_size"]
    return Case(
        name=f"{section['config']}: loader batch vs training step",
        params=f"batch {size}, T={config['data']['num_frames']}, {stage.num_workers} workers",
        flops=None,
        skelang=next_batch,
        reference=step,
        samples=size,
    )


def cases(config: dict, device: torch.device) -> list[Case]:
    out = []
    num_frames = config.get("num_frames", 64)
    preprocess = Preprocess(num_frames=num_frames)

    ntu_folder = REPO / config["ntu_raw"]
    files = sorted(ntu_folder.glob("*.skeleton"))
    if files:
        out.append(
            Case(
                name="ntu .skeleton parse",
                params=f"{len(files)} files",
                flops=None,
                skelang=lambda: [_C.parse_ntu_skeleton(str(f)) for f in files],
                reference=lambda: [parse_python(str(f)) for f in files],
            )
        )
        readable = [f for f in files if len(parse_python(str(f))["body_id"])]

        def numpy_path():
            for f in readable:
                sequence = read_ntu_skeleton(f)
                _numpy_preprocess(sequence.data, sequence.layout, num_frames)

        out.append(
            Case(
                name="ntu read + preprocess",
                params=f"{len(readable)} files, T={num_frames}",
                flops=None,
                skelang=lambda: [preprocess(read_ntu_skeleton(f)) for f in readable],
                reference=numpy_path,
            )
        )
    else:
        print(f"bench_data: {ntu_folder} not found, NTU cases left out", file=sys.stderr)

    archive = REPO / config["nw_ucla"]
    if archive.exists() and config.get("whole_nw_ucla", True):
        folder = Path(tempfile.mkdtemp(prefix="skelang-bench-")) / "nw-ucla.cache"
        cache.write_cache(nw_ucla.iter_nw_ucla(archive), folder)
        out.append(
            Case(
                name="nw-ucla 1484 seqs: cache vs raw archive",
                params=f"read + preprocess, T={num_frames}",
                flops=None,
                skelang=lambda: [preprocess(s) for s in cache.SequenceCache(folder)],
                reference=lambda: [preprocess(s) for s in nw_ucla.iter_nw_ucla(archive)],
            )
        )
    elif not archive.exists():
        print(f"bench_data: {archive} not found, NW-UCLA case left out", file=sys.stderr)
    if "loader" in config:
        loader = _loader_case(config["loader"], device)
        out += [loader] if loader is not None else []
    return out
