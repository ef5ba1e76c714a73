"""Skeleton data: layouts, the Sequence every reader produces, readers, splits,
preprocessing, and the built-in synthetic dataset."""

from skelang.data.formats import from_sequences
from skelang.data.layouts import (
    SkeletonLayout,
    get_layout,
    layout_from_dict,
    layout_from_hierarchy,
    layout_names,
    register_layout,
)
from skelang.data.preprocess import STREAMS, Augmentation, Preprocess
from skelang.data.sequence import MissingSkeletonError, Sequence
from skelang.data.splits import split_names, split_of
from skelang.data.synthetic import SYNTHETIC_ACTIONS, SyntheticSkeletons, generate_sequence, synthetic_class_names

__all__ = [
    "STREAMS",
    "SYNTHETIC_ACTIONS",
    "Augmentation",
    "MissingSkeletonError",
    "Preprocess",
    "Sequence",
    "SkeletonLayout",
    "SyntheticSkeletons",
    "from_sequences",
    "generate_sequence",
    "get_layout",
    "layout_from_dict",
    "layout_from_hierarchy",
    "layout_names",
    "register_layout",
    "split_names",
    "split_of",
    "synthetic_class_names",
]
