"""Named LoRA adapters in Hugging Face language models (the LVLM-VAR adapter), PEFT-compatible.

inject_lora wraps the model's targeted nn.Linear / GPT-2 Conv1D modules in LoRALayer (in
place) and freezes everything but the active adapter's A and B. Adapters are switched,
disabled, merged and unmerged model-wide. save_adapter / load_adapter read and write PEFT's
folder format (adapter_config.json + adapter_model.safetensors), so an adapter trained here
loads with peft.PeftModel.from_pretrained and a PEFT LoRA adapter loads here.

Targeting follows PEFT: target_modules as a list/tuple matches a module whose qualified name
equals an entry or ends with "." + entry; as a str it is a regex that must fullmatch the name.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import safetensors.torch
import torch
from pydantic import Field
from torch import nn

from skelang.files import atomic_open, write_text_atomic
from skelang.lm.lora import LoRALayer, is_lora_base, lora_backend
from skelang.schema import Bool, PositiveFloat, PositiveInt, Rate, Section, module_names, value_type

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# PeftModel keeps the wrapped model at .base_model (LoraModel) .model (the Hugging Face model).
PEFT_PREFIX = "base_model.model."
# PEFT LoraConfig fields that change what the adapter computes and are not implemented here,
# with the values that mean "off".
UNSUPPORTED_PEFT_FIELDS = {
    "use_dora": (False, None),
    "lora_bias": (False, None),
    "bias": ("none", None),
    "modules_to_save": (None, []),
    "rank_pattern": (None, {}),
    "alpha_pattern": (None, {}),
    "layers_to_transform": (None, []),
    "exclude_modules": (None, [], ""),
    "target_parameters": (None, []),
    "trainable_token_indices": (None, [], {}),
    "layer_replication": (None, []),
    "use_qalora": (False, None),
    "alora_invocation_tokens": (None, []),
    "use_bdlora": (None, False),
    "arrow_config": (None,),
    "kasa_config": (None,),
    "monteclora_config": (None,),
    "velora_config": (None,),
    "megatron_config": (None,),
    # PiSSA, OLoRA, CorDA, LoftQ, ... initialisations change the base weight as well.
    "init_lora_weights": (True, False, None, "gaussian", "eva"),
}


def _target_modules(value):
    if value == "all-linear":
        raise ValueError(
            "PEFT's 'all-linear' shortcut is not supported; list the module names "
            "(e.g. ['q_proj', 'k_proj', 'v_proj', 'o_proj'])"
        )
    return module_names(value)


class LoRAConfig(Section):
    """LoRA hyperparameters of one adapter (the `lm.lora` section of a run config): rank r,
    alpha (scaling alpha / r, or alpha / sqrt(r) with rslora), dropout on the LoRA branch's
    input, and the modules to adapt (PEFT's target_modules)."""

    r: PositiveInt = Field(16, description="rank")
    alpha: PositiveFloat = Field(32.0, description="scaling numerator: alpha / r (or alpha / sqrt(r) with rslora)")
    dropout: Rate = Field(0.05, description="dropout on the LoRA branch's input")
    rslora: Bool = Field(False, description="rank-stabilised scaling alpha / sqrt(r)")
    target_modules: value_type(_target_modules, list[str] | str) = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="module-name suffixes, or one regular expression that fully matches a module's name",
    )

    def matches(self, module_name: str) -> bool:
        """PEFT's rule: a regex fullmatches the qualified name; a list entry equals it or is a
        suffix after a '.'."""
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, module_name) is not None
        return any(module_name == t or module_name.endswith("." + t) for t in self.target_modules)


# --- the LoRA layers of a model --------------------------------------------------------------


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALayer]]:
    """(qualified name, layer) of every LoRALayer in the model."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, LoRALayer)]


def _configs(model: nn.Module) -> dict[str, LoRAConfig]:
    """The LoRAConfig of each adapter injected into the model (kept on it for save_adapter)."""
    configs = getattr(model, "_skelang_lora_configs", None)
    if configs is None:
        configs = {}
        model._skelang_lora_configs = configs
    return configs


def adapter_names(model: nn.Module) -> list[str]:
    """Names of the adapters in the model, in the order they were added."""
    names = dict.fromkeys(name for _, layer in lora_layers(model) for name in layer.lora_A)
    return list(names)


def _find_targets(model: nn.Module, config: LoRAConfig) -> list[tuple[str, nn.Module]]:
    """The modules config targets (not the insides of LoRA layers); errors if none matches or
    one cannot be wrapped."""
    inside_lora = tuple(f"{name}." for name, _ in lora_layers(model))
    modules = [(name, module) for name, module in model.named_modules() if name and not name.startswith(inside_lora)]
    targets = [(name, module) for name, module in modules if config.matches(name)]
    if not targets:
        linear = [name for name, module in modules if is_lora_base(module)]
        examples = (linear or [name for name, _ in modules])[:8]
        raise ValueError(
            f"target_modules {config.target_modules!r} match no module of {type(model).__name__}; "
            f"some of its {'linear ' if linear else ''}module names: {examples}"
        )
    for name, module in targets:
        if not (isinstance(module, LoRALayer) or is_lora_base(module)):
            raise TypeError(
                f"module {name!r} matches target_modules {config.target_modules!r} but is a "
                f"{type(module).__name__}; LoRA wraps only nn.Linear and transformers' Conv1D"
            )
    return targets


def _features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an nn.Linear, a Conv1D (weight (in, out)) or a LoRALayer."""
    if isinstance(module, LoRALayer):
        return module.in_features, module.out_features
    out_features, in_features = module.weight.shape
    return (in_features, out_features) if isinstance(module, nn.Linear) else (out_features, in_features)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)


# --- injection and switching -----------------------------------------------------------------


def inject_lora(model: nn.Module, config: LoRAConfig, adapter_name: str = "default", backend: str = "cpp") -> list[str]:
    """Add adapter `adapter_name` to every module `config` targets, in place: an nn.Linear or
    Conv1D is replaced by a LoRALayer (backend "cpp" or "reference"); a LoRALayer gets the new
    adapter. Returns the names of the adapted modules.

    The new adapter becomes active, and every parameter of the model is frozen except its
    lora_A and lora_B. To train more parameters (e.g. new token embeddings or a projector),
    set their requires_grad after the last inject_lora / load_adapter call.
    """
    lora_backend(backend)
    if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
        raise ValueError(f"adapter name must be a non-empty string without '.', got {adapter_name!r}")
    if adapter_name in adapter_names(model):
        raise ValueError(f"the model already has an adapter named {adapter_name!r}")
    merged = [name for name, layer in lora_layers(model) if layer.merged_adapter is not None]
    if merged:
        raise ValueError(
            f"cannot add adapter {adapter_name!r} while an adapter is merged into {merged[:3]}; "
            "unmerge_adapter(model) first"
        )
    targets = _find_targets(model, config)
    for name, module in targets:
        if not isinstance(module, LoRALayer):
            module = LoRALayer(module, backend=backend, module_name=name).train(module.training)
            _set_submodule(model, name, module)
        module.add_adapter(adapter_name, config.r, config.alpha, config.dropout, config.rslora)
    _configs(model)[adapter_name] = config.model_copy(deep=True)
    model.requires_grad_(False)
    set_adapter(model, adapter_name)
    return [name for name, _ in targets]


def set_adapter(model: nn.Module, name: str) -> None:
    """Make adapter `name` the active one in every LoRA layer; only its lora_A and lora_B
    require grad (other adapters' are frozen, the rest of the model is left as it is)."""
    names = adapter_names(model)
    if name not in names:
        raise ValueError(f"the model has no adapter named {name!r}; it has {names}")
    merged = [module for module, layer in lora_layers(model) if layer.merged_adapter not in (None, name)]
    if merged:
        raise ValueError(
            f"cannot switch to adapter {name!r} while another adapter is merged into "
            f"{merged[:3]}; unmerge_adapter(model) first"
        )
    for _, layer in lora_layers(model):
        layer.active_adapter = name
        for params in (layer.lora_A, layer.lora_B):
            for adapter, param in params.items():
                param.requires_grad_(adapter == name)


@contextlib.contextmanager
def disable_adapters(model: nn.Module) -> Iterator[None]:
    """Within the block every LoRA layer computes its base layer only."""
    layers = [layer for _, layer in lora_layers(model)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA layers to disable")
    merged = [layer.module_name for layer in layers if layer.merged_adapter is not None]
    if merged:
        raise ValueError(f"cannot disable adapters while one is merged into {merged[:3]}; unmerge_adapter(model) first")
    previous = [layer.disabled for layer in layers]
    for layer in layers:
        layer.disabled = True
    try:
        yield
    finally:
        for layer, disabled in zip(layers, previous):
            layer.disabled = disabled


def merge_adapter(model: nn.Module, name: str | None = None, safe_merge: bool = True) -> None:
    """Merge adapter `name` (default: the active one) into the base weights of its layers.
    With safe_merge a non-finite merged weight raises ValueError and every layer is left as
    it was (layers merged before the failing one are unmerged again)."""
    layers = lora_layers(model)
    if name is None:
        active = {layer.active_adapter for _, layer in layers}
        if len(active) != 1 or None in active:
            raise ValueError(f"merge_adapter needs an adapter name: the LoRA layers' active adapters are {active}")
        name = active.pop()
    if name not in adapter_names(model):
        raise ValueError(f"the model has no adapter named {name!r}; it has {adapter_names(model)}")
    done = []
    try:
        for _, layer in layers:
            if name in layer.lora_A:
                layer.merge(name, safe_merge=safe_merge)
                done.append(layer)
    except BaseException:
        for layer in done:
            layer.unmerge()
        raise


def unmerge_adapter(model: nn.Module) -> None:
    """Subtract the merged adapter from the base weights again."""
    merged = [layer for _, layer in lora_layers(model) if layer.merged_adapter is not None]
    if not merged:
        raise ValueError(f"no adapter is merged into {type(model).__name__}, nothing to unmerge")
    for layer in merged:
        layer.unmerge()


def lora_parameters(model: nn.Module, name: str | None = None) -> list[nn.Parameter]:
    """lora_A and lora_B of adapter `name`, or of every adapter when name is None."""
    if name is not None and name not in adapter_names(model):
        raise ValueError(f"the model has no adapter named {name!r}; it has {adapter_names(model)}")
    return [
        params[adapter]
        for _, layer in lora_layers(model)
        for params in (layer.lora_A, layer.lora_B)
        for adapter in params
        if name is None or adapter == name
    ]


# --- PEFT files ------------------------------------------------------------------------------


def save_adapter(
    model: nn.Module, folder: str | Path, adapter_name: str = "default", base_model_name_or_path: str | None = None
) -> None:
    """Write adapter `adapter_name` as PEFT does: folder/adapter_config.json and
    folder/adapter_model.safetensors (keys base_model.model.<module>.lora_A.weight /
    .lora_B.weight), each written atomically."""
    config = _configs(model).get(adapter_name)
    layers = [(name, layer) for name, layer in lora_layers(model) if adapter_name in layer.lora_A]
    if config is None or not layers:
        raise ValueError(
            f"the model has no adapter named {adapter_name!r} injected by inject_lora; it has {adapter_names(model)}"
        )
    tensors = {}
    for name, layer in layers:
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A[adapter_name].detach().cpu().contiguous()
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B[adapter_name].detach().cpu().contiguous()
    targets = config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules)
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "use_rslora": config.rslora,
        "target_modules": targets,
        "fan_in_fan_out": all(layer.fan_in_fan_out for _, layer in layers),
        "bias": "none",
        "inference_mode": True,
        "modules_to_save": None,
        "init_lora_weights": True,
        "use_dora": False,
        "lora_bias": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": None,
        "layers_pattern": None,
        "exclude_modules": None,
        "revision": None,
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(folder / WEIGHTS_NAME, "wb") as file:
        file.write(safetensors.torch.save(tensors, metadata={"format": "pt"}))
    write_text_atomic(folder / CONFIG_NAME, json.dumps(peft_config, indent=2, sort_keys=True) + "\n")


def config_from_peft(peft_config: dict, source: str = CONFIG_NAME) -> LoRAConfig:
    """The LoRAConfig of a PEFT adapter_config.json's content; `source` names it in errors."""
    if peft_config.get("peft_type") != "LORA":
        raise ValueError(f"{source}: peft_type is {peft_config.get('peft_type')!r}, expected 'LORA'")
    missing = [key for key in ("r", "lora_alpha", "target_modules") if peft_config.get(key) is None]
    if missing:
        raise ValueError(f"{source}: missing LoRA keys {missing}")
    for key, off in UNSUPPORTED_PEFT_FIELDS.items():
        if key in peft_config and peft_config[key] not in off:
            raise ValueError(
                f"{source}: {key} = {peft_config[key]!r} is not supported by skelang's LoRA layers "
                f"(expected one of {list(off)})"
            )
    try:
        return LoRAConfig(
            r=peft_config["r"],
            alpha=peft_config["lora_alpha"],
            dropout=peft_config.get("lora_dropout", 0.0),
            rslora=peft_config.get("use_rslora", False),
            target_modules=peft_config["target_modules"],
        )
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def load_adapter(model: nn.Module, folder: str | Path, adapter_name: str = "default", backend: str = "cpp") -> str:
    """Load a PEFT LoRA adapter folder into the model as adapter `adapter_name` (injected,
    active and trainable as after inject_lora); returns the adapter name."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: expected a PEFT LoRA adapter folder")
    if not weights_path.is_file():
        bin_only = (folder / "adapter_model.bin").exists()
        hint = " (only safetensors weights are read, not adapter_model.bin)" if bin_only else ""
        raise FileNotFoundError(f"{weights_path} not found{hint}")
    try:
        peft_config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from None
    config = config_from_peft(peft_config, str(config_path))
    # PEFT's keys: base_model.model.<module>.lora_A.weight (PeftModel) or <module>.lora_A.weight.
    saved = safetensors.torch.load_file(weights_path)
    weights = {key.removeprefix(PEFT_PREFIX): tensor for key, tensor in saved.items()}

    # Check everything against the model before changing it.
    if adapter_name in adapter_names(model):
        raise ValueError(f"the model already has an adapter named {adapter_name!r}")
    shapes = {}
    for name, module in _find_targets(model, config):
        in_features, out_features = _features(module)
        shapes[f"{name}.lora_A.weight"] = (config.r, in_features)
        shapes[f"{name}.lora_B.weight"] = (out_features, config.r)
    missing, unexpected = sorted(shapes.keys() - weights.keys()), sorted(weights.keys() - shapes.keys())
    if missing or unexpected:
        raise ValueError(
            f"{weights_path} does not fit {type(model).__name__} with target_modules "
            f"{config.target_modules!r}: missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, shape in shapes.items():
        if tuple(weights[key].shape) != shape:
            raise ValueError(f"{weights_path}: {key} has shape {tuple(weights[key].shape)}, expected {shape}")

    inject_lora(model, config, adapter_name, backend)
    with torch.no_grad():
        for name, layer in lora_layers(model):
            if adapter_name in layer.lora_A:
                layer.lora_A[adapter_name].copy_(weights[f"{name}.lora_A.weight"])
                layer.lora_B[adapter_name].copy_(weights[f"{name}.lora_B.weight"])
    return adapter_name
