"""The configuration schema's building blocks, shared by every component and the run config.

Each config section is a pydantic model (`Section`: unknown keys are errors). A field's
check is one of the value types below (`PositiveFloat`, `Fraction`, `OneOf("a", "b")`, ...):
a validator that refuses anything but its kind, finite numbers only, with a message such as
"expected a positive number, got 'fast'"; YAML strings are never coerced into numbers.
`config_error` turns pydantic's ValidationError into one line naming each bad key (and the
nearest known key for an unknown one). `load_yaml` reads YAML with the YAML 1.2 rule for
numbers, so `5e-4` is a float (PyYAML alone follows YAML 1.1, where it is a string).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from typing import Annotated, Any

import pydantic
import yaml
from pydantic import ConfigDict, PlainValidator


class Section(pydantic.BaseModel):
    """A config section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_dict(self) -> dict:
        return self.model_dump(mode="python")


def _got(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def value_type(check: Callable[[Any], Any], annotation=Any):
    """A field type whose values pass `check` (which raises ValueError("expected ...")) and
    become what it returns."""
    return Annotated[annotation, PlainValidator(check)]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_check(minimum: float, strict: bool, integer: bool):
    kind = ("a positive " if strict else "a non-negative ") + ("integer" if integer else "number")

    def check(value):
        valid = isinstance(value, int) and not isinstance(value, bool) if integer else _is_number(value)
        if not valid or value < minimum or (strict and value == minimum):
            raise ValueError(f"expected {kind}, got {_got(value)}")
        return value if integer else float(value)

    return check


positive = _number_check(0, True, False)
non_negative = _number_check(0, False, False)
positive_int = _number_check(0, True, True)
non_negative_int = _number_check(0, False, True)


def _interval(low: float, high: float, closed_low: bool, closed_high: bool):
    text = f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"

    def check(value):
        if (
            not _is_number(value)
            or not ((low <= value) if closed_low else (low < value))
            or not ((value <= high) if closed_high else (value < high))
        ):
            raise ValueError(f"expected a number in {text}, got {_got(value)}")
        return float(value)

    return check


fraction = _interval(0, 1, False, True)
rate = _interval(0, 1, True, False)


def boolean(value):
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_got(value)}")
    return value


def text(value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a path or a name, got {_got(value)}")
    return value


def optional(check):
    return lambda value: None if value is None else check(value)


def one_of(*choices):
    def check(value):
        if isinstance(value, bool) or value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {_got(value)}")
        return value

    return check


def positive_int_list(value):
    if not (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"expected a non-empty list of positive integers, got {_got(value)}")
    return list(value)


def increasing_int_list(value):
    if not (
        isinstance(value, (list, tuple))
        and all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in value)
        and list(value) == sorted(value)
    ):
        raise ValueError(f"expected an increasing list of epochs, got {_got(value)}")
    return list(value)


def label_list(value):
    if not (
        isinstance(value, (list, tuple))
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        and len(set(value)) == len(value)
    ):
        raise ValueError(f"expected a list of distinct class labels (0-based), got {_got(value)}")
    return list(value)


def module_names(value):
    """A list of module-name suffixes, or one regular expression (PEFT's target_modules)."""
    if isinstance(value, str) and value:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"expected a regular expression, got {value!r} ({error})") from None
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ValueError(f"expected a list of module names or a regular expression, got {_got(value)}")


# The field types.
PositiveFloat = value_type(positive, float)
NonNegativeFloat = value_type(non_negative, float)
PositiveInt = value_type(positive_int, int)
NonNegativeInt = value_type(non_negative_int, int)
Fraction = value_type(fraction, float)  # (0, 1]
Rate = value_type(rate, float)  # [0, 1): probabilities, decays
Bool = value_type(boolean, bool)
Text = value_type(text, str)
OptionalText = value_type(optional(text), str | None)
OptionalPositiveInt = value_type(optional(positive_int), int | None)
OptionalNonNegativeInt = value_type(optional(non_negative_int), int | None)
PositiveIntList = value_type(positive_int_list, list[int])
Milestones = value_type(increasing_int_list, list[int])
Labels = value_type(label_list, list[int])
ModuleNames = value_type(module_names, list[str] | str)


def OneOf(*choices):
    return value_type(one_of(*choices), str)


# --- errors -----------------------------------------------------------------------------------


def _field_model(model: type[pydantic.BaseModel], path: tuple) -> type[pydantic.BaseModel] | None:
    """The section model at `path` below `model` (None where the path leaves the sections)."""
    for key in path:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            return None
        inner = next(
            (
                arg
                for arg in getattr(field.annotation, "__args__", (field.annotation,))
                if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel)
            ),
            None,
        )
        if inner is None:
            return None
        model = inner
    return model


def _unknown(model: type[pydantic.BaseModel], loc: tuple, prefix: tuple) -> str:
    path = prefix + loc
    parent = _field_model(model, loc[:-1])
    known = list(parent.model_fields) if parent is not None else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    head = ".".join(map(str, path[:-1]))
    return f"unknown key {'.'.join(map(str, path))}" + (
        f" (did you mean {head + '.' if head else ''}{close[0]}?)" if close else ""
    )


def describe_error(model: type[pydantic.BaseModel], error: dict, prefix: tuple = ()) -> str:
    """One pydantic error as "key: expected ..., got ..." (or "unknown key ...")."""
    path = prefix + tuple(error["loc"])
    key = ".".join(map(str, path))
    if error["type"] == "extra_forbidden":
        return _unknown(model, tuple(error["loc"]), prefix)
    if error["type"] == "value_error":  # a check's message; a whole-section check names its keys
        message = str(error["ctx"]["error"])
        return f"{key}: {message}" if error["loc"] and key and not message.startswith(key + ".") else message
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key}: expected a section of keys, got {_got(error['input'])}"
    if error["type"] == "missing":
        return f"{key}: a value is required"
    return f"{key}: {error['msg']}" if key else error["msg"]


def problems(model: type[pydantic.BaseModel], error: pydantic.ValidationError, prefix: tuple = ()) -> str:
    """Every problem of a ValidationError of `model`, "; "-separated, keys prefixed by `prefix`."""
    return "; ".join(dict.fromkeys(describe_error(model, e, prefix) for e in error.errors()))


def validate(model: type[pydantic.BaseModel], values, source: str | None = None, prefix: tuple = ()):
    """model.model_validate(values); a ValidationError becomes a ValueError "source: problems"."""
    try:
        return model.model_validate(values)
    except pydantic.ValidationError as error:
        message = problems(model, error, prefix)
        raise ValueError(f"{source}: {message}" if source else message) from None


def keys_of(model: type[pydantic.BaseModel], prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) of every key of `model` and its subsections."""
    rows = []
    for name, field in model.model_fields.items():
        inner = _field_model(model, (name,))
        if inner is not None and field.default is None and field.default_factory is None:
            rows.append((prefix + name, None, field.description or ""))
        if inner is not None:
            rows += keys_of(inner, f"{prefix}{name}.")
            continue
        default = field.get_default(call_default_factory=True)
        rows.append((prefix + name, default, field.description or ""))
    return rows


# --- YAML 1.2 numbers ---------------------------------------------------------------------------


class YAML12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float rule: 5e-4, 1E+3 and .5 are numbers."""


YAML12Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YAML12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str):
    """YAML text with YAML 1.2 numbers; yaml.YAMLError on bad syntax."""
    return yaml.load(text, Loader=YAML12Loader)


def key_lines(text: str) -> dict[str, int]:
    """The 1-based line of each key of a YAML mapping of mappings, by its dotted name
    ("train.epochs"); {} for text that is not one."""
    lines: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    name = f"{prefix}{key.value}"
                    lines.setdefault(name, key.start_mark.line + 1)
                    walk(value, f"{name}.")

    try:
        walk(yaml.compose(text, Loader=YAML12Loader), "")
    except yaml.YAMLError:
        return {}
    return lines
