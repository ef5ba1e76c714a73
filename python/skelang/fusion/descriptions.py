"""Text descriptions of action classes, for aligning skeleton features with language.

Every class has a name, one sentence on what the person does and a short phrase on the
movement of each of five body parts (BODY_PARTS). The library ships descriptions for
NTU RGB+D 120 (whose first 60 classes are NTU RGB+D 60), NW-UCLA and the synthetic set
as YAML files next to this module; users load their own files in the same format,
add classes or override some with extend_descriptions:

    dataset: ntu120
    classes:
      - label: 0
        name: drink water
        description: The person lifts a cup to the mouth, drinks and lowers it.
        body_parts: {head: ..., hands: ..., arms: ..., torso: ..., legs: ...}
"""

from __future__ import annotations

import dataclasses
import operator
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from skelang.files import write_text_atomic

BODY_PARTS = ("head", "hands", "arms", "torso", "legs")
TEXT_KINDS = ("name", "description", "full", "body_parts")

_BUILTIN_FOLDER = Path(__file__).with_name("descriptions")
# built-in name -> (file in _BUILTIN_FOLDER, number of leading classes kept or None for all)
_BUILTINS: dict[str, tuple[str, int | None]] = {
    "ntu60": ("ntu120.yaml", 60),
    "ntu120": ("ntu120.yaml", None),
    "nw-ucla": ("nw_ucla.yaml", None),
    "synthetic": ("synthetic.yaml", None),
}
_TOP_KEYS = ("dataset", "classes")
_CLASS_KEYS = ("label", "name", "description", "body_parts")


@dataclasses.dataclass(frozen=True)
class ActionDescription:
    """One action class: its label, name, one-sentence description and, for each of
    BODY_PARTS, a short phrase on how that part moves."""

    label: int
    name: str
    description: str
    body_parts: dict[str, str]

    def body_parts_text(self) -> str:
        """'head: ...; hands: ...; arms: ...; torso: ...; legs: ...'."""
        return "; ".join(f"{part}: {self.body_parts[part]}" for part in BODY_PARTS)

    def to_dict(self) -> dict[str, Any]:
        """The entry as it is written in a YAML file."""
        return {
            "label": self.label,
            "name": self.name,
            "description": self.description,
            "body_parts": {part: self.body_parts[part] for part in BODY_PARTS},
        }


class ActionDescriptions:
    """The descriptions of every class of one dataset; classes[i] has label i."""

    def __init__(self, dataset: str, classes: Iterable[ActionDescription]):
        self.dataset = dataset
        self.classes = list(classes)
        seen: set[str] = set()
        for index, entry in enumerate(self.classes):
            if entry.label != index:
                raise ValueError(
                    f"descriptions of {dataset}: class {entry.name!r} has label {entry.label}, "
                    f"expected {index} (labels must be 0..n-1 in order)"
                )
            if entry.name in seen:
                raise ValueError(
                    f"descriptions of {dataset}: class {index} ({entry.name!r}): "
                    f"duplicate name, expected unique class names"
                )
            seen.add(entry.name)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, label: int) -> ActionDescription:
        return self.classes[label]

    def __iter__(self):
        return iter(self.classes)

    def __repr__(self) -> str:
        return f"ActionDescriptions(dataset={self.dataset!r}, {len(self)} classes)"

    def names(self) -> list[str]:
        """Class names in label order."""
        return [entry.name for entry in self.classes]

    def subset(self, labels: Iterable[int]) -> ActionDescriptions:
        """The classes with the given labels, relabelled 0..n-1 in the given order (for
        seen/unseen class splits)."""
        chosen = [operator.index(label) for label in labels]
        for label in chosen:
            if not 0 <= label < len(self):
                raise ValueError(f"descriptions of {self.dataset}: label {label} out of range 0..{len(self) - 1}")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"descriptions of {self.dataset}: subset labels repeat: {chosen}")
        return ActionDescriptions(
            self.dataset, [dataclasses.replace(self.classes[label], label=new) for new, label in enumerate(chosen)]
        )

    def texts(self, kind: str = "full") -> list[str]:
        """One text per class, in label order. kind: "name" (the class name), "description"
        (the sentence), "full" ("name: sentence") or "body_parts" ("head: ...; hands: ...")."""
        if kind == "name":
            return self.names()
        if kind == "description":
            return [entry.description for entry in self.classes]
        if kind == "full":
            return [f"{entry.name}: {entry.description}" for entry in self.classes]
        if kind == "body_parts":
            return [entry.body_parts_text() for entry in self.classes]
        raise ValueError(f"unknown text kind {kind!r}, expected one of {', '.join(TEXT_KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "classes": [entry.to_dict() for entry in self.classes]}

    def to_yaml(self, path: str | os.PathLike) -> None:
        """Write the descriptions in the YAML format load_descriptions reads, atomically
        (temporary file in the same folder, then os.replace)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=120)
        write_text_atomic(Path(path), text)


def builtin_descriptions() -> list[str]:
    """Names load_descriptions accepts for the descriptions shipped with the library."""
    return list(_BUILTINS)


def load_descriptions(source: str | os.PathLike) -> ActionDescriptions:
    """A built-in description set by name (see builtin_descriptions(); "ntu60" is the first
    60 classes of NTU RGB+D 120) or a YAML file in the format of this module's docstring."""
    if isinstance(source, str) and source in _BUILTINS:
        file_name, count = _BUILTINS[source]
        descriptions = _read_descriptions(_BUILTIN_FOLDER / file_name)
        if count is None:
            return descriptions
        return ActionDescriptions(source, descriptions.classes[:count])
    path = Path(source)
    if not path.is_file():
        raise ValueError(
            f"{source}: neither a built-in description set ({', '.join(_BUILTINS)}) nor an existing YAML file"
        )
    return _read_descriptions(path)


def extend_descriptions(base: ActionDescriptions, extra: ActionDescriptions | str | os.PathLike) -> ActionDescriptions:
    """base with the classes of `extra` (an ActionDescriptions, a built-in name or a YAML
    file): a class whose name is already in base replaces it at its label, any other is
    appended with the next free label. Returns a new object with base's dataset name."""
    if not isinstance(extra, ActionDescriptions):
        extra = load_descriptions(extra)
    classes = list(base.classes)
    labels = {entry.name: entry.label for entry in classes}
    for entry in extra.classes:
        label = labels.get(entry.name, len(classes))
        replaced = dataclasses.replace(entry, label=label, body_parts=dict(entry.body_parts))
        if label == len(classes):
            classes.append(replaced)
            labels[entry.name] = label
        else:
            classes[label] = replaced
    return ActionDescriptions(base.dataset, classes)


def _read_descriptions(path: Path) -> ActionDescriptions:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the descriptions as YAML: {error}") from error
    return _parse_descriptions(document, str(path))


def _parse_descriptions(document: Any, source: str) -> ActionDescriptions:
    """Validate a loaded YAML document; errors name `source` and the offending entry."""
    if not isinstance(document, dict):
        raise ValueError(
            f"{source}: expected a mapping with keys {', '.join(_TOP_KEYS)}, got {type(document).__name__}"
        )
    _check_keys(document, _TOP_KEYS, source)
    dataset = document["dataset"]
    if not isinstance(dataset, str) or not dataset.strip():
        raise ValueError(f"{source}: 'dataset' must be a non-empty string, got {dataset!r}")
    entries = document["classes"]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: 'classes' must be a non-empty list of class entries")
    classes = []
    names: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = _entry_name(source, index, entry)
        if not isinstance(entry, dict):
            raise ValueError(
                f"{where}: expected a mapping with keys {', '.join(_CLASS_KEYS)}, got {type(entry).__name__}"
            )
        _check_keys(entry, _CLASS_KEYS, where)
        label = entry["label"]
        if not isinstance(label, int) or isinstance(label, bool) or label != index:
            raise ValueError(f"{where}: label {label!r}, expected {index} (labels must be 0..n-1 in order)")
        name = _text(entry["name"], f"{where}: 'name'")
        if name in names:
            raise ValueError(
                f"{where}: duplicate name {name!r} (also class {names[name]}), expected unique class names"
            )
        names[name] = index
        description = _text(entry["description"], f"{where}: 'description'")
        parts = entry["body_parts"]
        if not isinstance(parts, dict):
            raise ValueError(f"{where}: 'body_parts' must be a mapping with keys {', '.join(BODY_PARTS)}")
        _check_keys(parts, BODY_PARTS, f"{where}: body_parts")
        body_parts = {part: _text(parts[part], f"{where}: body part '{part}'") for part in BODY_PARTS}
        classes.append(ActionDescription(index, name, description, body_parts))
    return ActionDescriptions(dataset.strip(), classes)


def _entry_name(source: str, index: int, entry: Any) -> str:
    """'file: class 3 ('name')' for error messages."""
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{source}: class {index}" + (f" ({name!r})" if isinstance(name, str) else "")


def _check_keys(mapping: dict, expected: tuple[str, ...], where: str) -> None:
    missing = [key for key in expected if key not in mapping]
    unknown = [str(key) for key in mapping if key not in expected]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}; expected {', '.join(expected)}")
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(expected)}")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty string, got {value!r}")
    return value.strip()
