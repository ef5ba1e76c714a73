"""Faithfulness of explanations to the action narrative (LVLM-VAR).

An explanation cites semantic action tokens such as ``<a12>``. It is faithful when those
tokens matter to the prediction: removing the narrative steps with a cited code should lower
the predicted class's probability more than removing as many random steps does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch

from skelang.stats import bootstrap_interval

_CITED = re.compile(r"<a(\d+)>")
_ACTION = re.compile(r"\baction\s*:\s*(.*?)\s*(?:\.\s|\.$|\n|explanation\s*:|$)", re.IGNORECASE)


def cited_codes(explanation: str) -> list[int]:
    """The distinct codes that `explanation` cites as ``<aN>``, in order of first citation."""
    return list(dict.fromkeys(int(code) for code in _CITED.findall(explanation)))


def _probability(class_probability: Callable, codes: list[int], label: int) -> float:
    """class_probability(codes) as a float: the value itself when it is a number, else its
    entry `label` (for a callable returning all class probabilities)."""
    value = class_probability(codes)
    if isinstance(value, (int, float)) or getattr(value, "ndim", None) == 0:
        return float(value)  # a number, or a 0-d tensor or array
    return float(value[label])


def probability_drop(
    class_probability: Callable,
    codes: Sequence[int],
    cited: Sequence[int],
    label: int,
    num_random: int = 5,
    generator: torch.Generator | None = None,
) -> dict:
    """How much the probability of `label` drops when the cited steps are removed, against
    removing as many random steps.

    class_probability(codes) gets a narrative's codes (one per step, repeats kept; possibly
    empty) and returns the probability of `label`, or all class probabilities (indexed by
    `label`). The random steps are drawn (with `generator`) among the steps whose code is not
    cited, or among all steps when there are too few; their probability is averaged over
    `num_random` draws.

    Returns {"full", "cited_removed", "random_removed", "drop_cited", "drop_random", "cited":
    number of distinct cited codes, "removed": number of steps removed}. When nothing is cited,
    or no step has a cited code, nothing is removed: both drops are 0 ("cited" tells the two
    cases apart, 0 when no code is cited).
    """
    if num_random < 1:
        raise ValueError(f"num_random must be >= 1, got {num_random}")
    codes = [int(code) for code in codes]
    cited_set = {int(code) for code in cited}
    full = _probability(class_probability, codes, label)
    is_cited = [code in cited_set for code in codes]
    removed = sum(is_cited)
    result = {
        "full": full,
        "cited_removed": full,
        "random_removed": full,
        "drop_cited": 0.0,
        "drop_random": 0.0,
        "cited": len(cited_set),
        "removed": removed,
    }
    if removed == 0:
        return result

    cited_removed = _probability(class_probability, [code for code, hit in zip(codes, is_cited) if not hit], label)
    pool = [step for step, hit in enumerate(is_cited) if not hit]
    if len(pool) < removed:
        pool = list(range(len(codes)))
    random_removed = 0.0
    for _ in range(num_random):
        drawn = torch.randperm(len(pool), generator=generator)[:removed].tolist()
        drop = {pool[i] for i in drawn}
        kept = [code for step, code in enumerate(codes) if step not in drop]
        random_removed += _probability(class_probability, kept, label) / num_random
    result.update(
        cited_removed=cited_removed,
        random_removed=random_removed,
        drop_cited=full - cited_removed,
        drop_random=full - random_removed,
    )
    return result


def named_action(explanation: str, class_names: Sequence[str]) -> int | None:
    """Index of the class the answer names: the text after "Action:" (up to ".", a new line
    or "Explanation:") when it equals a class name (case-insensitive); else the longest class
    name found anywhere in the text (as whole words); None when no class is named."""
    lowered = [name.strip().lower() for name in class_names]
    match = _ACTION.search(explanation)
    if match is not None:
        answer = match.group(1).strip().strip("\"'*").strip().lower()
        if answer in lowered:
            return lowered.index(answer)
    text = explanation.lower()
    best, best_key = None, None
    for index, name in enumerate(lowered):
        found = re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text) if name else None
        if found is not None:
            key = (-len(name), found.start())  # longest name first, then earliest
            if best_key is None or key < best_key:
                best, best_key = index, key
    return best


def faithfulness_summary(records: Sequence[dict]) -> dict:
    """Aggregate per-explanation records: each is `probability_drop`'s dict plus "named" (the
    `named_action` index or None) and "predicted" (the predicted class index).

    Returns {"count", "citing": fraction citing at least one code, "drop_cited",
    "drop_random", "drop_gap" = drop_cited - drop_random, "drop_gap_interval": its 95% paired
    bootstrap interval over the citing records ([low, high]; NaN when none cites),
    "agreement": fraction whose named class is the predicted one}. The drops are means over
    the citing records only (NaN when none cites): an explanation citing nothing has nothing
    to remove. The explanations are faithful where the interval lies above zero.
    """
    if len(records) == 0:
        raise ValueError("records must not be empty")
    for i, record in enumerate(records):
        missing = {"drop_cited", "drop_random", "cited", "named", "predicted"} - record.keys()
        if missing:
            raise ValueError(f"records[{i}] lacks {sorted(missing)}")
    citing = [record for record in records if record["cited"] > 0]
    drop_cited = (sum(r["drop_cited"] for r in citing) / len(citing)) if citing else math.nan
    drop_random = (sum(r["drop_random"] for r in citing) / len(citing)) if citing else math.nan
    agreement = sum(r["named"] is not None and r["named"] == r["predicted"] for r in records)
    interval = [math.nan, math.nan]
    if citing:
        interval = list(bootstrap_interval([r["drop_cited"] - r["drop_random"] for r in citing])[1:])
    return {
        "count": len(records),
        "citing": len(citing) / len(records),
        "drop_cited": drop_cited,
        "drop_random": drop_random,
        "drop_gap": drop_cited - drop_random,
        "drop_gap_interval": interval,
        "agreement": agreement / len(records),
    }
