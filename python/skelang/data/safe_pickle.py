"""Loading pickled data (PYSKL annotation files, NTU converter .npy files) with a
restricted unpickler: only plain containers and numpy arrays can be built, never
arbitrary objects, so an untrusted file cannot run code."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    # Protocol 2 stores bytes through _codecs.encode (mmcv, hence PYSKL, writes protocol 2);
    # protocol 5 rebuilds arrays with _frombuffer. Both only build data.
    ("_codecs", "encode"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(
                f"{self.source}: refusing to load '{module}.{name}': only containers and numpy "
                f"arrays may be unpickled from data files"
            )
        return super().find_class(module, name)


def load_pickle(path: str | Path):
    """A pickle file's contents, restricted to containers and numpy arrays."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, str(path)).load()


def load_npy_object(path: str | Path):
    """A .npy file; object arrays (pickled inside) are unpickled with the restricted
    unpickler. A 0-d object array (NTU's converter stores a dict so) gives its item."""
    with open(path, "rb") as f:
        version = npy_format.read_magic(f)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        array = RestrictedUnpickler(f, str(path)).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: expected a pickled numpy array, got {type(array).__name__}")
    return array[()] if array.shape == () else array
