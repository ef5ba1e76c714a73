"""Action narratives: temporally smoothed token sequences, merged by run length.

Each segment is assigned a code id of the VST codebook. `smooth_tokens` picks the code ids by
Viterbi decoding, trading distance to the codebook against a penalty for every switch between
neighbouring segments. `run_length` merges repeated codes into `TokenRun`s, which
`format_narrative` writes as text such as ``<a17>x3 <a5> <a42>x2``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
import torch

_TOKEN = re.compile(r"<a(\d+)>(?:x(\d+))?")


def token_name(code: int) -> str:
    return f"<a{code}>"


def smooth_tokens(distances: torch.Tensor, switch_penalty: float, candidates: int = 8) -> torch.Tensor:
    """Code ids (S,) int64 minimising
    sum_s distances[s, code_s] + switch_penalty * #{s : code_s != code_(s-1)}.

    distances: (S, K), non-negative distance of each segment to each code. The minimum is
    exact over the `candidates` nearest codes of each segment (Viterbi). Ties go to the
    lowest code id, deciding from the last segment backwards; penalty 0 gives the argmin.
    """
    if distances.ndim != 2 or distances.shape[1] < 1:
        raise ValueError(f"distances must have shape (S, K) with K >= 1, got {tuple(distances.shape)}")
    if switch_penalty < 0:
        raise ValueError(f"switch_penalty must be >= 0, got {switch_penalty}")
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    S, K = distances.shape
    if S == 0:
        return torch.zeros(0, dtype=torch.int64)
    cost = distances.detach().to("cpu", torch.float64).numpy()
    c = min(candidates, K)
    # (S, c) nearest code ids, re-sorted by id so that argmin's first-index rule prefers low ids.
    nearest = np.sort(np.argsort(cost, axis=1, kind="stable")[:, :c], axis=1)
    local = np.take_along_axis(cost, nearest, axis=1)  # (S, c)
    best = local[0].copy()  # (c,) cost of the best path ending in each candidate
    back = np.zeros((S, c), dtype=np.int64)  # best previous candidate
    for s in range(1, S):
        switch = switch_penalty * (nearest[s - 1][:, None] != nearest[s][None, :])  # (c, c)
        through = best[:, None] + switch  # (previous c, current c)
        back[s] = through.argmin(axis=0)
        best = through[back[s], np.arange(c)] + local[s]
    codes = np.empty(S, dtype=np.int64)
    j = int(best.argmin())
    for s in range(S - 1, -1, -1):
        codes[s] = nearest[s, j]
        j = int(back[s, j])
    return torch.from_numpy(codes)


@dataclasses.dataclass(frozen=True)
class TokenRun:
    """`count` consecutive segments with code `code`, covering frames [start, end)."""

    code: int
    count: int
    start: int
    end: int


def run_length(codes: Sequence[int] | torch.Tensor, spans: Sequence[tuple[int, int]]) -> list[TokenRun]:
    """Merge consecutive equal codes; codes (S,), spans (S,) of (start, end) frames."""
    codes = [int(c) for c in (codes.tolist() if isinstance(codes, torch.Tensor) else codes)]
    if len(codes) != len(spans):
        raise ValueError(f"codes and spans must have the same length, got {len(codes)} codes and {len(spans)} spans")
    runs: list[TokenRun] = []
    for code, (start, end) in zip(codes, spans):
        if runs and runs[-1].code == code:
            last = runs[-1]
            runs[-1] = TokenRun(code, last.count + 1, last.start, int(end))
        else:
            runs.append(TokenRun(code, 1, int(start), int(end)))
    return runs


def format_narrative(runs: Sequence[TokenRun]) -> str:
    """``<a17>x3 <a5> <a42>x2``: one token per run, with xN when the run repeats."""
    return " ".join(token_name(run.code) + (f"x{run.count}" if run.count > 1 else "") for run in runs)


def parse_narrative(text: str) -> list[tuple[int, int]]:
    """(code, count) of each token of a narrative written by `format_narrative`."""
    parsed = []
    for token in text.split():
        match = _TOKEN.fullmatch(token)
        if match is None or (match.group(2) is not None and int(match.group(2)) < 1):
            raise ValueError(f"malformed narrative token {token!r}: expected <aN> or <aN>xM with M >= 1")
        parsed.append((int(match.group(1)), int(match.group(2) or 1)))
    return parsed


def narrative_codes(text: str) -> list[int]:
    """The narrative's code ids, one per segment (runs expanded)."""
    return [code for code, count in parse_narrative(text) for _ in range(count)]
