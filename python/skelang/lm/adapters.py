"""Named LoRA adapters in Hugging Face language models (the LVLM-VAR adapter), PEFT-compatible.

LoRAModel wraps a model as PEFT's tuner model does: it replaces the targeted nn.Linear / GPT-2
Conv1D modules with LoRA layers (the class chosen by the base layer's type, see
skelang.lm.lora.lora_layer_class), and owns the adapters' configs, the active adapter and the
merge stack; everything but the active adapter's A and B is frozen. Adapters are added,
switched, disabled, merged and unmerged model-wide. save_adapter / load_adapter read and write
PEFT's folder format (adapter_config.json + adapter_model.safetensors), so an adapter trained
here loads with peft.PeftModel.from_pretrained and a PEFT LoRA adapter loads here.

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
from skelang.lm.lora import LoRALayer, is_lora_base, lora_backend, lora_layer_class
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


# --- the LoRA layers of a module -------------------------------------------------------------


def lora_layers(module: nn.Module) -> list[tuple[str, LoRALayer]]:
    """(qualified name, layer) of every LoRALayer in `module`."""
    return [(name, layer) for name, layer in module.named_modules() if isinstance(layer, LoRALayer)]


def _check_adapter_name(name) -> None:
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"adapter name must be a non-empty string without '.', got {name!r}")


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


# --- the model -----------------------------------------------------------------------------


class LoRAModel(nn.Module):
    """`model` with LoRA adapters (PEFT's LoraModel): calls and attributes go to the wrapped
    model (`.model`), whose targeted layers are replaced in place by LoRA layers.

    configs:        adapter name -> LoRAConfig, in the order the adapters were added
    active_adapter: the adapter the forward pass uses (and the only one that trains)
    merged:         the merge stack: adapters merged into the base weights (at most one)
    """

    def __init__(
        self, model: nn.Module, config: LoRAConfig | None = None, adapter_name: str = "default", backend: str = "cpp"
    ):
        super().__init__()
        if isinstance(model, LoRAModel):
            raise TypeError("the model is a LoRAModel already: add adapters with its add_adapter")
        lora_backend(backend)
        self.model = model
        self.backend = backend
        self.configs: dict[str, LoRAConfig] = {}
        self.active_adapter: str | None = None
        self.merged: list[str] = []
        if config is not None:
            self.add_adapter(adapter_name, config)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules of this module
        except AttributeError:
            return getattr(self.model, name)  # the wrapped model's (config, generate, ...)

    @property
    def adapter_names(self) -> list[str]:
        return list(self.configs)

    def lora_layers(self) -> list[tuple[str, LoRALayer]]:
        """(name in the wrapped model, layer) of every LoRA layer."""
        return lora_layers(self.model)

    def _check_known(self, name: str) -> None:
        if name not in self.configs:
            raise ValueError(f"the model has no adapter named {name!r}; it has {self.adapter_names}")

    def add_adapter(self, adapter_name: str, config: LoRAConfig) -> list[str]:
        """Add adapter `adapter_name` to every module `config` targets: an nn.Linear or Conv1D
        is replaced by the LoRA layer of its type, a LoRA layer gets the new adapter. The new
        adapter becomes active and every parameter of the wrapped model is frozen except its
        lora_A and lora_B (to train more, set requires_grad after the last add_adapter /
        load_adapter). Returns the names of the adapted modules."""
        _check_adapter_name(adapter_name)
        if adapter_name in self.configs:
            raise ValueError(f"the model already has an adapter named {adapter_name!r}")
        if self.merged:
            raise ValueError(
                f"cannot add adapter {adapter_name!r} while adapter {self.merged[-1]!r} is merged; "
                "unmerge_adapter() first"
            )
        targets = _find_targets(self.model, config)
        for name, module in targets:
            if not isinstance(module, LoRALayer):
                module = lora_layer_class(module)(module, backend=self.backend, module_name=name).train(module.training)
                _set_submodule(self.model, name, module)
            module.add_adapter(adapter_name, config.r, config.alpha, config.dropout, config.rslora)
        self.configs[adapter_name] = config.model_copy(deep=True)
        self.model.requires_grad_(False)
        self.set_adapter(adapter_name)
        return [name for name, _ in targets]

    def set_adapter(self, name: str) -> None:
        """Make adapter `name` the active one in every LoRA layer; only its lora_A and lora_B
        require grad (other adapters' are frozen, the rest of the model is left as it is)."""
        self._check_known(name)
        if self.merged and self.merged[-1] != name:
            raise ValueError(
                f"cannot switch to adapter {name!r} while adapter {self.merged[-1]!r} is merged; "
                "unmerge_adapter() first"
            )
        for _, layer in self.lora_layers():
            layer.active_adapter = name
            for params in (layer.lora_A, layer.lora_B):
                for adapter, param in params.items():
                    param.requires_grad_(adapter == name)
        self.active_adapter = name

    @contextlib.contextmanager
    def disable_adapters(self) -> Iterator[None]:
        """Within the block every LoRA layer computes its base layer only."""
        layers = [layer for _, layer in self.lora_layers()]
        if not layers:
            raise ValueError(f"{type(self.model).__name__} has no LoRA layers to disable")
        if self.merged:
            raise ValueError(
                f"cannot disable adapters while adapter {self.merged[-1]!r} is merged; unmerge_adapter() first"
            )
        previous = [layer.disabled for layer in layers]
        for layer in layers:
            layer.disabled = True
        try:
            yield
        finally:
            for layer, disabled in zip(layers, previous):
                layer.disabled = disabled

    def merge_adapter(self, name: str | None = None, safe_merge: bool = True) -> None:
        """Merge adapter `name` (default: the active one) into the base weights of its layers
        and push it on the merge stack. With safe_merge a non-finite merged weight raises
        ValueError and every layer is left as it was."""
        name = self.active_adapter if name is None else name
        if name is None:
            raise ValueError("the model has no adapter to merge")
        self._check_known(name)
        if self.merged:
            raise ValueError(f"adapter {self.merged[-1]!r} is merged already; unmerge_adapter() first")
        done = []
        try:
            for _, layer in self.lora_layers():
                if name in layer.lora_A:
                    layer.merge(name, safe_merge=safe_merge)
                    done.append(layer)
        except BaseException:
            for layer in done:
                layer.unmerge()
            raise
        self.merged.append(name)

    def unmerge_adapter(self) -> None:
        """Subtract the last merged adapter from the base weights again."""
        if not self.merged:
            raise ValueError(f"no adapter is merged into {type(self.model).__name__}, nothing to unmerge")
        for _, layer in self.lora_layers():
            if layer.merged_adapter is not None:
                layer.unmerge()
        self.merged.pop()

    def lora_parameters(self, name: str | None = None) -> list[nn.Parameter]:
        """lora_A and lora_B of adapter `name`, or of every adapter when name is None."""
        if name is not None:
            self._check_known(name)
        return [
            params[adapter]
            for _, layer in self.lora_layers()
            for params in (layer.lora_A, layer.lora_B)
            for adapter in params
            if name is None or adapter == name
        ]

    # --- PEFT files ------------------------------------------------------------------------------

    def save_adapter(
        self, folder: str | Path, adapter_name: str = "default", base_model_name_or_path: str | None = None
    ) -> None:
        """Write adapter `adapter_name` as PEFT does: folder/adapter_config.json and
        folder/adapter_model.safetensors (keys base_model.model.<module>.lora_A.weight /
        .lora_B.weight), each written atomically."""
        self._check_known(adapter_name)
        config = self.configs[adapter_name]
        layers = [(name, layer) for name, layer in self.lora_layers() if adapter_name in layer.lora_A]
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

    def load_adapter(self, folder: str | Path, adapter_name: str = "default") -> str:
        """Load a PEFT LoRA adapter folder as adapter `adapter_name` (added, active and
        trainable as after add_adapter); nothing changes when the folder does not fit."""
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
        _check_adapter_name(adapter_name)
        if adapter_name in self.configs:
            raise ValueError(f"the model already has an adapter named {adapter_name!r}")
        shapes = {}
        for name, module in _find_targets(self.model, config):
            in_features, out_features = _features(module)
            shapes[f"{name}.lora_A.weight"] = (config.r, in_features)
            shapes[f"{name}.lora_B.weight"] = (out_features, config.r)
        missing, unexpected = sorted(shapes.keys() - weights.keys()), sorted(weights.keys() - shapes.keys())
        if missing or unexpected:
            raise ValueError(
                f"{weights_path} does not fit {type(self.model).__name__} with target_modules "
                f"{config.target_modules!r}: missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
            )
        for key, shape in shapes.items():
            if tuple(weights[key].shape) != shape:
                raise ValueError(f"{weights_path}: {key} has shape {tuple(weights[key].shape)}, expected {shape}")
        self.add_adapter(adapter_name, config)
        with torch.no_grad():
            for name, layer in self.lora_layers():
                if adapter_name in layer.lora_A:
                    layer.lora_A[adapter_name].copy_(weights[f"{name}.lora_A.weight"])
                    layer.lora_B[adapter_name].copy_(weights[f"{name}.lora_B.weight"])
        return adapter_name


def inject_lora(model: nn.Module, config: LoRAConfig, adapter_name: str = "default", backend: str = "cpp") -> LoRAModel:
    """`model` wrapped in a LoRAModel with adapter `adapter_name` (PEFT's get_peft_model); a
    LoRAModel gets the adapter added. Returns the LoRAModel."""
    if isinstance(model, LoRAModel):
        model.add_adapter(adapter_name, config)
        return model
    return LoRAModel(model, config, adapter_name, backend)


def load_adapter(
    model: nn.Module, folder: str | Path, adapter_name: str = "default", backend: str = "cpp"
) -> LoRAModel:
    """`model` (wrapped in a LoRAModel unless it is one) with the PEFT adapter at `folder`."""
    lora_model = model if isinstance(model, LoRAModel) else LoRAModel(model, backend=backend)
    lora_model.load_adapter(folder, adapter_name)
    return lora_model


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
