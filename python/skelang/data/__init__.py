"""Skeleton data: layouts (joint order, bones, landmarks) and the Sequence every reader produces."""

from skelang.data.layouts import (SkeletonLayout, get_layout, layout_from_dict,
                                  layout_from_hierarchy, layout_names, register_layout)
from skelang.data.sequence import Sequence

__all__ = ["SkeletonLayout", "Sequence", "get_layout", "layout_from_dict",
           "layout_from_hierarchy", "layout_names", "register_layout"]
