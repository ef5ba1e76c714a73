"""Data: the C++ .skeleton parser against a pure-Python reader of the same format; reading
and preprocessing with the C++/Eigen geometry against the numpy reference; and a whole
dataset from its cache against reading it from the raw archive.

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
    return out
