"""One entry point to every format: detect what a path holds and yield its sequences.

    iter_sequences(path)  -> Sequence, or the ValueError of a bad file, one by one
    open_sequences(path, benchmark=None, part=None) -> a random-access list of Sequences

Formats: a skelang cache folder; NTU RGB+D .skeleton files (a file or a folder); NW-UCLA
JSON (a file, a folder or a .tar(.xz) archive); Kinetics-skeleton JSON (ST-GCN); PYSKL
annotation pickles; CTR-GCN .npz files; BVH motion capture; and the built-in synthetic set
("synthetic", "synthetic:<samples per class>" or "synthetic:<samples per class>:<seed>").
"""

from __future__ import annotations

import collections
import multiprocessing
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from skelang.data import bvh, cache, formats, ntu, nw_ucla
from skelang.data.json_text import parse_json
from skelang.data.layouts import get_layout
from skelang.data.sequence import MissingSkeletonError, Sequence, data_files, value_or_error
from skelang.data.splits import split_of
from skelang.data.synthetic import SyntheticSkeletons

FORMATS = ("cache", "ntu", "nw-ucla", "kinetics", "pyskl", "ctrgcn", "bvh", "clips", "synthetic")


KINETICS_KEYS = ("data", "label", "label_index")


def _parsed_json_kind(file: Path) -> str | None:
    """ "kinetics" (a 'data' list of frames, or Kinetics' label keys), "nw-ucla" (a
    'skeletons' key), or None when the file shows neither; ValueError naming the file and
    line when it is not JSON, OSError when it cannot be read."""
    head = parse_json(file.read_bytes(), str(file))
    if not isinstance(head, dict):
        return None
    if "skeletons" in head:
        return "nw-ucla"
    return "kinetics" if any(key in head for key in KINETICS_KEYS) else None


def _json_kind(file: Path) -> str | None:
    """_parsed_json_kind, None when the file cannot be read or parsed."""
    try:
        return _parsed_json_kind(file)
    except (ValueError, OSError):
        return None


def _json_folder_kind(folder: Path) -> str:
    """The kind of the first JSON file of `folder` that shows one (an empty or broken file
    does not decide for the others)."""
    files = data_files(folder, ".json")
    for file in files:
        kind = _json_kind(file)
        if kind is not None:
            return kind
    raise ValueError(
        f"{folder}: none of its {len(files)} .json files is a Kinetics-skeleton clip (a 'data' list) "
        f"or an NW-UCLA sequence (a 'skeletons' key)"
    )


def _json_file_kind(file: Path) -> str:
    try:
        kind = _parsed_json_kind(file)
    except OSError as error:
        raise ValueError(f"{file}: cannot read it ({error.strerror})") from None
    if kind is None:
        raise ValueError(
            f"{file}: neither a Kinetics-skeleton clip (a 'data' list of frames) nor an NW-UCLA "
            f"sequence (a 'skeletons' key); pass format='kinetics' or 'nw-ucla' (--format) to read it as one"
        )
    return kind


# The data files a folder may hold, one format per folder (.json: Kinetics or NW-UCLA).
_DATA_SUFFIXES = (".skeleton", ".bvh", ".npy", ".json", ".pkl", ".pickle", ".npz")


def _one_format(folder: Path) -> None:
    """A folder holding data files of several formats would be read as one of them, the
    others left out unsaid: a ValueError counting each."""
    counts = collections.Counter(
        file.suffix.lower() for file in folder.iterdir() if file.suffix.lower() in _DATA_SUFFIXES and file.is_file()
    )
    if len(counts) > 1:
        found = ", ".join(f"{count} {suffix}" for suffix, count in sorted(counts.items()))
        raise ValueError(
            f"{folder}: holds data files of several formats ({found}); skelang reads one format per "
            f"folder: put each format in a folder of its own (a .pkl or .npz is read as a file: pass its path)"
        )


def detect_format(path: str | Path) -> str:
    text = str(path)
    if text == "synthetic" or text.startswith("synthetic:"):
        return "synthetic"
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_dir():
        if cache.is_cache(path):
            return "cache"
        _one_format(path)
        for suffix, kind in ((".skeleton", "ntu"), (".bvh", "bvh"), (".npy", "clips")):
            if data_files(path, suffix):
                return kind
        if data_files(path, ".npy", nested=True):  # clips in class-named folders
            return "clips"
        if data_files(path, ".json"):
            return _json_folder_kind(path)
        files = [f for suffix in (".pkl", ".npz") for f in data_files(path, suffix)]
        hint = (
            f"; its {', '.join(sorted(f.name for f in files)[:3])}{' ...' if len(files) > 3 else ''}: a .pkl "
            f"(PYSKL / MMAction2) or .npz (CTR-GCN) holds a whole dataset and is read as a file: pass its path"
            if files
            else ""
        )
        raise ValueError(f"{path}: found no .skeleton, .json or .bvh files and no skelang cache{hint}")
    suffixes, suffix = "".join(path.suffixes[-2:]).lower(), path.suffix.lower()
    if suffix == ".skeleton":
        return "ntu"
    if suffix == ".json":
        return _json_file_kind(path)
    if suffix in (".pkl", ".pickle"):
        return "pyskl"
    if suffix == ".npz":
        return "ctrgcn" if _is_ctrgcn_npz(path) else "clips"
    if suffix == ".npy":
        raise ValueError(
            f"{path}: one .npy array: put clips in a folder (one .npy per clip), or read an array of many "
            f"clips (N, C, T, V, M) with its labels by skelang.data.formats.read_array_file"
        )
    if suffix == ".bvh":
        return "bvh"
    if suffixes.endswith((".tar", ".tar.xz", ".tar.gz", ".tgz")) or tarfile.is_tarfile(path):
        return _archive_kind(path)
    if suffix == ".zip":
        raise ValueError(
            f"{path}: a .zip archive of {_archived(_member_suffixes(path))}; skelang reads a folder: "
            f"extract it (unzip) and pass the folder"
        )
    raise ValueError(
        f"{path}: cannot tell the format from the name; pass it (--format, or format= in Python): "
        f"one of {', '.join(FORMATS)}"
    )


def _member_suffixes(path: Path, limit: int = 20) -> list[str]:
    """The suffixes ('.json', '.skeleton', ...) of the first `limit` files of a tar or zip
    archive, in order; a ValueError naming a damaged archive."""
    suffixes = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [info.filename for info in archive.infolist() if not info.is_dir()]
                return [Path(name).suffix.lower() for name in names[:limit]]
        with tarfile.open(path, mode="r|*") as archive:  # streamed: reads only the first files
            for member in archive:
                if member.isfile():
                    suffixes.append(Path(member.name).suffix.lower())
                    if len(suffixes) == limit:
                        break
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(f"{path}: a damaged archive ({error})") from None
    return suffixes


_ARCHIVED = {
    ".skeleton": "NTU RGB+D .skeleton files",
    ".bvh": "BVH files",
    ".npy": "clip arrays (.npy)",
    ".kinetics-json": "Kinetics-skeleton .json files",
}


def _archived(suffixes: list[str]) -> str:
    """What the files of an archive are, in words."""
    known = [suffix for suffix in suffixes if suffix in _ARCHIVED]
    if known:
        return _ARCHIVED[known[0]]
    return f"{suffixes[0] or 'suffix-less'} files" if suffixes else "no file"


def _first_json(path: Path) -> bytes | None:
    """The bytes of the first .json file of a tar archive (streamed: nothing after it is read)."""
    with tarfile.open(path, mode="r|*") as archive:
        for member in archive:
            if member.isfile() and member.name.lower().endswith(".json"):
                return archive.extractfile(member).read()
    return None


def _archive_kind(path: Path) -> str:
    """A tar archive of NW-UCLA JSON files, the one kind read straight from an archive;
    the others (Kinetics-skeleton JSON among them) are a ValueError saying what is inside
    and to extract it."""
    suffixes = _member_suffixes(path)
    if ".json" in suffixes:
        try:
            head = parse_json(_first_json(path) or b"null", str(path))
        except (ValueError, tarfile.TarError, EOFError, OSError):
            head = None  # a broken file: the NW-UCLA reader names it
        if not (isinstance(head, dict) and "skeletons" not in head and any(key in head for key in KINETICS_KEYS)):
            return "nw-ucla"
        suffixes = [".kinetics-json"]
    raise ValueError(
        f"{path}: an archive of {_archived(suffixes)}; skelang reads archives of NW-UCLA .json files only: "
        f"extract it (tar -xf) and pass the folder"
    )


def _is_ctrgcn_npz(path: Path) -> bool:
    """CTR-GCN's .npz holds x_train / x_test; another .npz holds one array per clip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name in ("x_train.npy", "x_test.npy") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return True  # the CTR-GCN reader reports the damage, naming the file


def _files(path: Path, suffix: str) -> list[Path]:
    return data_files(path, suffix) if path.is_dir() else [path]


def _parallel(read: Callable[[Path], Sequence], files: list[Path], workers: int) -> Iterator[Sequence | ValueError]:
    """read(file) for each file, in order, on `workers` processes."""
    if workers <= 1 or len(files) < 2 * workers:
        for file in files:
            yield value_or_error(read, file)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_ReadOrError(read), files, chunksize=16)


class _ReadOrError:
    def __init__(self, read):
        self.read = read

    def __call__(self, file):
        return value_or_error(self.read, file)


def iter_sequences(
    path: str | Path, format: str = "auto", workers: int = 1, clips: dict | None = None
) -> Iterator[Sequence | ValueError]:
    """Every sequence at `path`, in a stable order; a malformed file yields its ValueError
    (which names the file) so callers can list it and go on. `clips` holds the options of
    the clips format (formats.read_clip_arrays: layout, dims, labels, coordinates)."""
    kind = detect_format(path) if format == "auto" else format
    if kind not in FORMATS:
        raise ValueError(f"unknown format '{format}'; known: {', '.join(FORMATS)}")
    if kind == "synthetic":
        fields = str(path).split(":")[1:]
        try:
            count, seed = (int(fields[0]) if fields else 40), (int(fields[1]) if len(fields) > 1 else 0)
        except ValueError:
            raise ValueError(f"'{path}': expected synthetic[:samples per class[:seed]]") from None
        yield from SyntheticSkeletons(samples_per_class=count, seed=seed)
        return
    path = Path(path)
    if kind == "cache":
        yield from cache.SequenceCache(path)
    elif kind == "ntu":
        yield from _parallel(ntu.read_ntu_skeleton, _files(path, ".skeleton"), workers)
    elif kind == "nw-ucla":
        if path.is_dir() or path.suffix.lower() != ".json":
            yield from nw_ucla.iter_nw_ucla(path)
        else:
            yield value_or_error(nw_ucla.read_nw_ucla_json, path)
    elif kind == "kinetics":
        if path.is_dir():
            yield from formats.iter_kinetics(path)
        else:
            yield value_or_error(formats.read_kinetics_json, path)
    elif kind == "pyskl":
        yield from formats.iter_pyskl(path)
    elif kind == "ctrgcn":
        import numpy as np

        arrays = formats.load_numpy(path)
        if isinstance(arrays, np.ndarray):
            raise ValueError(f"{path}: a single array, not a CTR-GCN .npz file (x_train, y_train, x_test, y_test)")
        with arrays:
            parts = [part for part in ("train", "test") if f"x_{part}" in arrays.files]
        if not parts:
            raise ValueError(f"{path}: no x_train or x_test array: not a CTR-GCN .npz file")
        for part in parts:
            yield from formats.read_ctrgcn_npz(path, part=part)
    elif kind == "clips":
        options = dict(clips or {})
        if options.get("layout") is None:
            options["layout"] = _clip_layout(path, options.get("dims", "TVC"))
        for item in formats.read_clip_arrays(path, **options):
            yield item
    elif kind == "bvh":
        for item in _parallel(bvh.read_bvh, _files(path, ".bvh"), workers):
            if isinstance(item, Sequence):  # read in another process: register its layout here
                bvh.hierarchy_layout_name(item.meta["joint_names"], item.meta["parents"])
            yield item


def _clip_layout(path: Path, dims: str) -> str:
    """The layout of clip arrays whose layout is not given: from their joint count."""
    V, shape = _clip_joints(path, dims)
    if V not in formats.LAYOUT_BY_JOINTS:
        raise ValueError(
            f"{path}: cannot tell the skeleton layout of clips of shape {shape} ({dims}); pass the layout (--layout)"
        )
    return formats.LAYOUT_BY_JOINTS[V]


def _clip_joints(path: Path, dims: str) -> tuple[int | None, tuple]:
    """(joints, shape) of the first clip array at `path` that reads (joints None when the array
    does not have the dimensions `dims` names)."""
    import numpy as np

    formats.check_dims(dims, str(path))
    files = (data_files(path, ".npy") or data_files(path, ".npy", nested=True)) if path.is_dir() else [path]
    errors = []
    for file in files:  # the first clip that reads (a bad one is listed by the reader, not here)
        try:
            loaded = formats.load_numpy(file)
            if not isinstance(loaded, np.ndarray):
                with loaded as npz:
                    if not npz.files:
                        raise ValueError(f"{path}: no clip arrays")
                    loaded = formats._npz_array(npz, npz.files[0], str(path))
            break
        except ValueError as error:
            errors.append(error)
    else:
        raise errors[0] if errors else ValueError(f"{path}: no clip arrays")
    return (loaded.shape[dims.upper().index("V")] if loaded.ndim == len(dims) else None), loaded.shape


def open_sequences_for(path: str | Path, layout: str) -> list[Sequence] | cache.SequenceCache:
    """open_sequences(path) for a model of skeleton `layout`: clip arrays (.npz, .npy), whose
    files do not name their layout, are read as `layout` when they have its number of joints
    (a layout of the user's own with the joint count of a known one), else as always."""
    if detect_format(path) == "clips":
        joints, _ = _clip_joints(Path(path), "TVC")
        if joints == get_layout(layout).num_joints:
            return open_sequences(path, clips={"layout": layout})
    return open_sequences(path)


def open_sequences(
    path: str | Path,
    benchmark: str | None = None,
    part: str | None = None,
    format: str = "auto",
    workers: int = 1,
    clips: dict | None = None,
) -> list[Sequence] | cache.SequenceCache:
    """All sequences at `path` (a cache is opened without reading it whole), optionally only
    those of `part` ("train" or "test") of a benchmark split. NTU files without any body
    (NTU's missing skeletons) are left out, as the standard protocols do; any other bad
    file raises its error."""
    kind = detect_format(path) if format == "auto" else format
    if kind == "cache" and benchmark is None:
        return cache.SequenceCache(path)
    sequences = []
    for item in iter_sequences(path, kind, workers, clips):
        if isinstance(item, MissingSkeletonError):
            continue
        if isinstance(item, ValueError):
            raise item
        if benchmark is None or split_of(benchmark, item.meta) == part:
            sequences.append(item)
    return sequences
