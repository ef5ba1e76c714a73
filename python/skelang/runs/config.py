"""Run configurations: one schema (pydantic sections, see skelang.schema) from which the
defaults, the checks and `skelang config keys` come.

A run config is a YAML file with `seed`, `stage` (encoder, ssf, vst or lm), and the sections
`data`, `model` (skelang.encoder.EncoderConfig; not for the lm stage, whose encoder comes from
lm.vst_run), `optim`, `train`, and the section of its stage (`ssf`: skelang.fusion.SSFConfig,
`vst`: skelang.vst.VSTConfig with encoder_run, `lm`: the language-model stage with its
`lora`: skelang.lm.LoRAConfig). `key.sub=value` overrides are YAML values. Numbers follow
YAML 1.2 (`5e-4` is a number). Configs of earlier skelang versions, which switched stages
with `ssf.enabled`, `vst.enabled` and `lm.enabled`, are converted (upgrade_config).

The defaults follow CTR-GCN's recipes where one setting serves every data set: SGD with
Nesterov momentum 0.9, lr 0.1, 5 warm-up epochs, lr x 0.1 at epochs 35 and 55 of 65 (its NTU
schedule), weight decay 1e-4 and batch 16 (its NW-UCLA values), 52 frames, one pass over the
training set per epoch, random crops resampled to 52 frames. CTR-GCN's whole NW-UCLA recipe
(5 passes per epoch, per-sequence minmax, sorted random / evenly spaced frames, x 0.1 at epoch
50) is configs/nw_ucla_ctrgcn.yaml.
The shipped configs are package data (skelang/configs/*.yaml): `config_path("nw_ucla_hglnet")`.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import Field

from skelang.data.preprocess import SAMPLINGS, STREAMS
from skelang.data.splits import split_names
from skelang.encoder.hglnet import EncoderConfig
from skelang.fusion.ssf import SSFConfig
from skelang.lm.adapters import LoRAConfig
from skelang.schema import (
    Bool,
    Fraction,
    Milestones,
    NonNegativeFloat,
    NonNegativeInt,
    OneOf,
    OptionalNonNegativeInt,
    OptionalPositiveInt,
    OptionalText,
    PositiveFloat,
    PositiveInt,
    Rate,
    Section,
    Text,
    fraction,
    key_lines,
    load_yaml,
    non_negative,
    one_of,
    optional,
    problems,
    value_type,
)
from skelang.vst.model import VSTConfig

STAGES = ("encoder", "ssf", "vst", "lm")
STAGE_SECTIONS = ("ssf", "vst", "lm")
# Keys a resumed run may change: how long it trains and where, not what it learns.
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.eval_every",
    "train.device",
    "train.test_batch_size",
    "train.threads",
    "train.parallel",
    "train.tensorboard",
    "data.num_workers",
)


def _crop_range(value):
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ValueError(f"expected [low, high] fractions of the frames, got {value!r}")
    low, high = fraction(value[0]), fraction(value[1])
    if low > high:
        raise ValueError(f"expected low <= high, got {list(value)}")
    return [low, high]


def _streams(value):
    if not (isinstance(value, (list, tuple)) and value and all(name in STREAMS for name in value)):
        raise ValueError(f"expected a non-empty list of {', '.join(STREAMS)}, got {value!r}")
    return list(value)


def _degrees(value):
    """A non-negative angle for every axis, or a list of three (about x, y, z)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 3:
            raise ValueError(f"expected a number or [x, y, z] degrees, got {value!r}")
        return [non_negative(v) for v in value]
    return non_negative(value)


class AugmentationSection(Section):
    rotation_degrees: value_type(_degrees, float | list[float]) = Field(
        0.0, description="uniform rotation in +-this about every axis, or [x, y, z] degrees"
    )
    scale: NonNegativeFloat = Field(0.0, description="scale factor uniform in [1 - scale, 1 + scale]")
    isotropic_scale: Bool = Field(False, description="one scale factor for all axes (CTR-GCN's view transform)")
    shear: NonNegativeFloat = Field(0.0, description="off-diagonal shear entries uniform in +-this")
    joint_dropout: Rate = Field(0.0, description="probability that a joint is zeroed for the whole sequence")


class DataSection(Section):
    train: OptionalText = Field(None, description="training data: any path skelang data reads")
    test: OptionalText = Field(None, description="test data (null: the test part of `benchmark` in `train`)")
    benchmark: value_type(optional(one_of(*split_names())), str | None) = Field(
        None, description="a standard split: " + ", ".join(split_names())
    )
    num_classes: OptionalPositiveInt = Field(None, description="null: the largest label + 1")
    num_frames: PositiveInt = Field(52, description="frames of a model input")
    repeat: PositiveInt = Field(1, description="passes over the training set per epoch (CTR-GCN NW-UCLA: 5)")
    streams: value_type(_streams, list[str]) = Field(["joint"], description="input streams: " + ", ".join(STREAMS))
    sampling: OneOf(*SAMPLINGS) = Field(
        "interpolate", description="frames: interpolate (random crop, resampled) or index (CTR-GCN NW-UCLA)"
    )
    train_crop: value_type(_crop_range, list[float]) = Field(
        [0.5, 1.0], description="training crop, fractions of the frames"
    )
    eval_crop: Fraction = Field(1.0, description="the central fraction of the frames at evaluation")
    normalize: Bool = Field(True, description="centre (and rotate, scale) each sequence")
    rotate: Bool = Field(True, description="rotate to the canonical body frame (3D)")
    scale: Bool = Field(False, description="mean spine length 1")
    minmax: Bool = Field(False, description="each coordinate onto [-1, 1] per sequence (CTR-GCN NW-UCLA)")
    augmentation: AugmentationSection = Field(default_factory=AugmentationSection)
    num_workers: OptionalNonNegativeInt = Field(
        None, description="DataLoader workers (null: from the thread budget: none on 2 cores)"
    )


class OptimSection(Section):
    optimizer: OneOf("sgd", "adamw") = Field("sgd", description="sgd (momentum, Nesterov) or adamw")
    lr: PositiveFloat = Field(0.1, description="base learning rate")
    momentum: NonNegativeFloat = Field(0.9, description="SGD momentum")
    nesterov: Bool = Field(True, description="Nesterov momentum")
    weight_decay: NonNegativeFloat = Field(1e-4, description="weight decay")
    schedule: OneOf("step", "cosine") = Field("step", description="after the warm-up: step or cosine")
    milestones: Milestones = Field([35, 55], description="step: lr x gamma at each of these epochs")
    gamma: PositiveFloat = Field(0.1, description="step: the factor at each milestone")
    warmup_epochs: NonNegativeInt = Field(5, description="linear warm-up epochs")
    label_smoothing: Rate = Field(0.0, description="cross-entropy label smoothing")


class TrainSection(Section):
    epochs: PositiveInt = Field(65, description="training epochs")
    batch_size: PositiveInt = Field(16, description="training batch size")
    test_batch_size: PositiveInt = Field(64, description="evaluation batch size")
    eval_every: PositiveInt = Field(1, description="evaluate every this many epochs (and after the last)")
    device: OneOf("auto", "cpu", "cuda") = Field("auto", description="auto: CUDA when available")
    deterministic: Bool = Field(False, description="torch.use_deterministic_algorithms")
    precision: OneOf("fp32", "bf16", "fp16") = Field(
        "fp32",
        description="training and evaluation under "
        "torch.autocast: bf16 (CPU, CUDA) or fp16 (CUDA, with a "
        "gradient scaler)",
    )
    parallel: OneOf("ddp", "fsdp") = Field(
        "ddp",
        description="under torchrun: ddp (every rank holds the whole model) or fsdp (the language-model "
        "stage's weights, gradients and optimizer state sharded over the ranks, one unit per transformer "
        "block; bf16 or fp32)",
    )
    ema_decay: Rate = Field(
        0.0,
        description="exponential moving average of the trained weights after every step (0: off; "
        "0.998 averages about the last 500 steps): evaluated, checkpointed and used for inference "
        "in place of the trained weights",
    )
    threads: OptionalPositiveInt = Field(
        None,
        description="intra-op threads (null: this job's share of the CPUs it may use, beside the other skelang jobs)",
    )
    tensorboard: Bool = Field(
        False, description="also write TensorBoard event files (run/tensorboard; needs the tensorboard package)"
    )


class VSTSection(VSTConfig):
    encoder_run: OptionalText = Field(
        None, description="a run whose encoder is loaded and frozen (null: trained with VST)"
    )


class LMJointSection(Section):
    enabled: Bool = Field(False, description="the VST run's encoder learns with the language model")
    lr_scale: PositiveFloat = Field(0.01, description="the encoder's learning rate, times optim.lr")
    vst_weight: NonNegativeFloat = Field(1.0, description="weight of the VST run's own losses")
    temperature: PositiveFloat = Field(0.1, description="soft code assignment (squared-distance units)")


class LMSection(Section):
    vst_run: OptionalText = Field(None, description="the VST run whose encoder and codebook narrate")
    model: Text = Field("smollm2", description="smollm2, a .gguf file or a local Hugging Face folder")
    model_dtype: OneOf("fp32", "bf16", "fp16") = Field(
        "fp32",
        description="the frozen language model's weights: bf16 or fp16 halve its memory; the trained "
        "weights (LoRA, action-token rows, projector, encoder token) stay float32 and are cast in the forward pass",
    )
    descriptions: OptionalText = Field(None, description="class names and descriptions (as ssf.descriptions)")
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    action_tokens: Bool = Field(True, description="<aK> tokens with trainable embedding rows")
    projector: Bool = Field(False, description="soft tokens from the segment features (LLaVA-style)")
    encoder_token: Bool = Field(
        False,
        description="one soft token from the encoder's pooled feature, starting as its prediction over the "
        "class names' embeddings (skelang.lm.action_tokens.ClassEvidenceToken)",
    )
    encoder_token_dropout: Rate = Field(
        0.0,
        description="training only: the probability that a sample's encoder token carries no evidence "
        "(uniform class probabilities), so that the model also learns to answer from the narrative",
    )
    candidates: Bool = Field(True, description="the prompt lists the candidate class names")
    explanations: Bool = Field(True, description="targets explain the answer (else the name only)")
    answer_weight: PositiveFloat = Field(
        1.0, description="loss weight of the class name's tokens against the explanation's"
    )
    max_new_tokens: PositiveInt = Field(48, description="explanation length")
    cite_only_narrative: Bool = Field(True, description="explanations cite only the narrative's action tokens")
    repetition_penalty: PositiveFloat = Field(1.3, description="explanation decoding (Hugging Face's; 1: off)")
    explain_samples: NonNegativeInt = Field(50, description="test samples whose explanations are measured")
    joint: LMJointSection = Field(default_factory=LMJointSection)


class RunConfig(Section):
    """A whole run config."""

    seed: NonNegativeInt = Field(0, description="seed of python, numpy and torch")
    stage: OneOf(*STAGES) = Field("encoder", description="what the run trains: encoder, ssf, vst or lm")
    data: DataSection = Field(default_factory=DataSection)
    model: EncoderConfig | None = Field(None, description="the encoder (skelang.encoder.EncoderConfig)")
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)
    ssf: SSFConfig | None = Field(None, description="stage ssf: skeleton-language fusion")
    vst: VSTSection | None = Field(None, description="stage vst: semantic action tokens")
    lm: LMSection | None = Field(None, description="stage lm: the language model")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _stage_section(cls, values):
        """The vst stage's section may be left out (its defaults)."""
        if isinstance(values, dict) and values.get("stage") == "vst" and values.get("vst") is None:
            return {**values, "vst": {}}
        return values

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        if self.data.train is None:
            raise ValueError("data.train: expected the training data's path, got null")
        if self.data.test is None and self.data.benchmark is None:
            raise ValueError(
                "data.test: expected the test data's path (or a data.benchmark to split data.train), got null"
            )
        for name in STAGE_SECTIONS:
            if name != self.stage and getattr(self, name) is not None:
                raise ValueError(
                    f"{name}: a section of stage {name}, but this config's stage is {self.stage} "
                    f"(set stage: {name}, or remove the section)"
                )
        if self.stage == "ssf" and (self.ssf is None or self.ssf.descriptions is None):
            raise ValueError(
                "ssf.descriptions: expected a set of action descriptions (ntu60, ntu120, nw-ucla, "
                "synthetic or a YAML file), got null"
            )
        if self.stage == "lm":
            if self.lm is None:
                raise ValueError("lm: stage lm needs an lm section (see configs/nw_ucla_lm.yaml)")
            for key in ("vst_run", "descriptions"):
                if getattr(self.lm, key) is None:
                    raise ValueError(f"lm.{key}: expected a value for stage lm (see configs/nw_ucla_lm.yaml), got null")
            if self.lm.joint.enabled and not (self.lm.action_tokens or self.lm.projector or self.lm.encoder_token):
                raise ValueError(
                    "lm.joint.enabled: the language model's loss reaches the encoder through the action "
                    "tokens, the projector or the encoder token, and lm.action_tokens, lm.projector and "
                    "lm.encoder_token are all false"
                )
            if self.lm.encoder_token_dropout > 0 and not self.lm.encoder_token:
                raise ValueError(
                    f"lm.encoder_token_dropout: {self.lm.encoder_token_dropout} drops the encoder token, "
                    "and lm.encoder_token is false"
                )
            if self.model is not None:
                raise ValueError("model: stage lm takes its encoder from lm.vst_run; remove the model section")
            dtype, precision = self.lm.model_dtype, self.train.precision
            if (dtype == "fp16" and precision != "fp16") or (dtype == "bf16" and precision == "fp16"):
                raise ValueError(
                    f"lm.model_dtype: {dtype} with train.precision: {precision}: a float16 "
                    "model trains under train.precision: fp16 (its gradient scaler keeps small gradients from "
                    "vanishing), a bfloat16 one under fp32 or bf16"
                )
            if self.lm.model_dtype != "fp32" and self.train.parallel == "fsdp":
                raise ValueError(
                    f"lm.model_dtype: {self.lm.model_dtype} with train.parallel: fsdp: FSDP shards each "
                    "transformer block in one dtype and the LoRA weights train in float32; shard the "
                    "float32 model and compute in bf16 (train.precision: bf16)"
                )
        elif self.model is None:
            raise ValueError("model: expected a section with a `type` (e.g. stgcn, ctrgcn, hglnet)")
        return self


def upgrade_config(raw: Any) -> Any:
    """A config of an earlier skelang (stages switched by ssf/vst/lm.enabled, every section
    present, an empty model section for lm runs) in today's form; today's configs unchanged."""
    if not isinstance(raw, dict):
        return raw
    switched = [name for name in STAGE_SECTIONS if isinstance(raw.get(name), dict) and "enabled" in raw[name]]
    if not switched:
        return raw
    raw = copy.deepcopy(raw)
    on = []
    for name in switched:
        enabled = raw[name].pop("enabled")
        if not isinstance(enabled, bool):
            raise ValueError(f"{name}.enabled: expected true or false, got {enabled!r}")
        if enabled:
            on.append(name)
        else:
            del raw[name]  # a stage that was off: its section was ignored
    if len(on) > 1:
        raise ValueError(
            f"{' and '.join(name + '.enabled' for name in on)}: train one stage at a time "
            f"(vst.encoder_run can load an SSF run)"
        )
    if on:
        if raw.get("stage", on[0]) != on[0]:
            raise ValueError(f"stage is {raw['stage']} but {on[0]}.enabled is true")
        raw["stage"] = on[0]
    if raw.get("stage") == "lm" and raw.get("model") in ({}, None):
        raw.pop("model", None)
    return raw


def resolve_config(raw: Any, source: str = "config") -> dict:
    """The full configuration of `raw` (a dict as in a YAML file, earlier forms converted):
    checked against RunConfig, every default filled in, as plain dicts and lists (the
    sections of other stages left out). ValueError names `source` and every bad key."""
    try:
        raw = upgrade_config(raw)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a mapping of sections, got {raw!r}")
    try:
        config = RunConfig.model_validate(raw)
    except pydantic.ValidationError as error:
        raise ValueError(f"{source}: {problems(RunConfig, error)}") from None
    resolved = config.model_dump(mode="python")
    for name in ("model", *STAGE_SECTIONS):
        if resolved[name] is None:
            del resolved[name]
    return resolved


class _Bad(Exception):
    pass


def format_override(key: str, value: Any) -> str:
    """`key=value` as apply_override reads it back (the value as YAML: true, [joint, bone], 0.5)."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def apply_override(raw: dict, override: str) -> None:
    """Sets `key.sub=value` in `raw`, the value parsed as a YAML (1.2) scalar or list."""
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
        target[name] = load_yaml(value)
    except yaml.YAMLError:
        raise _Bad(f"override '{override}': cannot parse {value!r} as a YAML value") from None


def shipped_configs() -> dict[str, Path]:
    """name -> path of every config shipped with skelang (package data)."""
    folder = resources.files("skelang") / "configs"
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }


def config_path(name: str | Path) -> Path:
    """A config file: `name` itself when it is a file, else the shipped config of that name
    (with or without .yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_configs()
    stem = path.name.removesuffix(".yaml")
    if str(path.parent) in (".", "configs") and stem in shipped:
        return shipped[stem]
    raise ValueError(
        f"{name}: no such config file, and no shipped config of that name (skelang config list: {', '.join(shipped)})"
    )


def read_config_file(path: str | Path) -> dict:
    """A config file's raw mapping (YAML 1.2); an error names the file."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read: {error}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {raw!r}")
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """The configuration of the YAML file (or shipped config name) `path` with `overrides`
    ("optim.lr=5e-4", "data.streams=[joint,bone]") applied, resolved against RunConfig."""
    path = config_path(path)
    raw = read_config_file(path)
    try:
        for override in overrides:
            apply_override(raw, override)
    except _Bad as error:
        raise ValueError(f"{path}: {error}") from None
    # a bad key may come from the file or from an override: the message names both, and the
    # line of each key of the file that no override sets
    where = f"{path} with the overrides {' '.join(overrides)}" if overrides else str(path)
    try:
        return resolve_config(raw, where)
    except ValueError as error:
        message = str(error)
        if not message.startswith(where):
            raise
        details = _with_lines(message[len(where) :], path.read_text(), overrides)
        raise ValueError(where + details) from None


def _with_lines(message: str, text: str, overrides: list[str]) -> str:
    """`message` with "(line N)" after each key of the config file `text` it names ("unknown
    key train.epohcs", "train.epochs: ..."), except keys an override sets (or replaces with
    its section)."""
    overridden = [override.split("=", 1)[0].strip() for override in overrides]
    lines = {
        key: line
        for key, line in key_lines(text).items()
        if not any(key == name or key.startswith(f"{name}.") for name in overridden)
    }
    for key in sorted(lines, key=len, reverse=True):  # train.epochs before train
        named = rf"(?<![\w.])(unknown key {re.escape(key)}|{re.escape(key)}(?=:))(?![\w.])"
        message = re.sub(named, lambda match, line=lines[key]: f"{match.group(0)} (line {line})", message)
    return message


def flatten(config: dict, prefix: str = "") -> dict:
    """{"a.b": value} of a nested config."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


# The keys that name files or folders; relative ones are read from the working directory.
PATH_KEYS = (
    ("data", "train"),
    ("data", "test"),
    ("vst", "encoder_run"),
    ("lm", "vst_run"),
    ("lm", "model"),
    ("lm", "descriptions"),
    ("ssf", "descriptions"),
    ("ssf", "text_encoder"),
)


def absolute_paths(config: dict) -> dict:
    """A copy of a resolved config whose PATH_KEYS that name an existing file or folder
    relative to the working directory are absolute, as a run's config.yaml keeps them: its
    evaluation, resumption and export then work from any directory. Names that are not paths
    (synthetic:40:0, smollm2, built-in description sets) stay as they are."""
    from skelang.fusion.descriptions import builtin_descriptions

    names = {"smollm2", "synthetic", *builtin_descriptions()}
    config = copy.deepcopy(config)
    for section, key in PATH_KEYS:
        value = (config.get(section) or {}).get(key)
        if isinstance(value, str) and value not in names and not value.startswith("synthetic:"):
            path = Path(value).expanduser()
            if not path.is_absolute() and path.exists():
                config[section][key] = str(path.resolve())
    return config
