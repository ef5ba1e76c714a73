"""The standard benchmark protocols: which samples they hold, which train and which test.

ntu60-xsub    NTU RGB+D 60 cross-subject: 20 training subjects
ntu60-xview   NTU RGB+D 60 cross-view: cameras 2 and 3 train, camera 1 tests
ntu120-xsub   NTU RGB+D 120 cross-subject: 53 training subjects
ntu120-xset   NTU RGB+D 120 cross-setup: even setup numbers train
nw-ucla-view3 NW-UCLA: views 1 and 2 train, view 3 tests
"""

from __future__ import annotations

from collections.abc import Callable

NTU60_TRAIN_SUBJECTS = frozenset([1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38])
NTU120_TRAIN_SUBJECTS = NTU60_TRAIN_SUBJECTS | frozenset(
    [
        45,
        46,
        47,
        49,
        50,
        52,
        53,
        54,
        55,
        56,
        57,
        58,
        59,
        70,
        74,
        78,
        80,
        81,
        82,
        83,
        84,
        85,
        86,
        89,
        91,
        92,
        93,
        94,
        95,
        97,
        98,
        100,
        103,
    ]
)
NTU60_TRAIN_CAMERAS = frozenset([2, 3])

_NTU60 = {"setup": range(1, 18), "action": range(1, 61)}
_NTU120 = {"setup": range(1, 33), "action": range(1, 121)}

_RULES: dict[str, tuple[str, Callable[[dict], bool], dict[str, range]]] = {
    # name -> (metadata key it needs, is-training rule, the values of the benchmark's samples)
    "ntu60-xsub": ("subject", lambda meta: meta["subject"] in NTU60_TRAIN_SUBJECTS, _NTU60),
    "ntu60-xview": ("camera", lambda meta: meta["camera"] in NTU60_TRAIN_CAMERAS, _NTU60),
    "ntu120-xsub": ("subject", lambda meta: meta["subject"] in NTU120_TRAIN_SUBJECTS, _NTU120),
    "ntu120-xset": ("setup", lambda meta: meta["setup"] % 2 == 0, _NTU120),
    "nw-ucla-view3": ("view", lambda meta: meta["view"] in (1, 2), {"view": range(1, 4)}),
}


def split_names() -> list[str]:
    return list(_RULES)


def split_of(benchmark: str, meta: dict) -> str | None:
    """'train' or 'test' for a sample's metadata (as the readers put it in Sequence.meta), or
    None for a sample outside the benchmark: NTU RGB+D 60's protocols hold setups 1-17 and
    actions 1-60 only, so an NTU-120 sample (setup 18-32 or action 61-120) in the same folder
    is left out, not taken as class 60 and above."""
    if benchmark not in _RULES:
        raise KeyError(f"unknown benchmark split '{benchmark}'; known: {', '.join(_RULES)}")
    key, is_training, members = _RULES[benchmark]
    for needed in (key, *members):
        if needed not in meta:
            raise ValueError(
                f"{meta.get('source', 'sample')}: split '{benchmark}' needs '{needed}' in the sample's metadata"
            )
    if any(meta[name] not in values for name, values in members.items()):
        return None
    return "train" if is_training(meta) else "test"
