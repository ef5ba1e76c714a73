"""Semantic action tokens and motion soft tokens for a causal language model (LVLM-VAR).

The VST module writes a skeleton sequence as an action narrative of discrete codes
``<a0>`` .. ``<a{K-1}>``. `add_action_tokens` teaches a language model to read them: each code
becomes one tokenizer token with its own trainable embedding row, while the model's vocabulary
and lm_head stay as they are. So that explanations can cite the tokens, `ActionTokenHead`
adds their logits to the lm_head's, from the same rows (tied, as SmolLM2 and Llama-style
models tie their embeddings).

`MotionProjector` and `insert_soft_tokens` are the LLaVA-style alternative: continuous encoder
features are projected into the language model's embedding space and put in place of
placeholder tokens of the prompt. `ClassEvidenceToken` is one such soft token that starts as
the encoder's own prediction, written in the embeddings of the class names.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from skelang.vst.narrative import token_name


class ActionTokenEmbedding(nn.Module):
    """The model's frozen input embedding plus one trainable row per semantic action token.

    Ids in [first_action_id, first_action_id + num_codes) are looked up in `action_embeddings`
    (num_codes, H); every other id in the frozen base table. Only the action rows get gradients.
    """

    def __init__(self, base: nn.Embedding, first_action_id: int, num_codes: int):
        super().__init__()
        if num_codes < 1:
            raise ValueError(f"num_codes must be >= 1, got {num_codes}")
        if not 0 < first_action_id <= base.num_embeddings:
            raise ValueError(
                f"first_action_id must be in [1, {base.num_embeddings}] (the base "
                f"embedding's rows), got {first_action_id}"
            )
        self.base = base.requires_grad_(False)
        self.first_action_id = first_action_id
        self.num_codes = num_codes
        with torch.no_grad():
            rows = base.weight[:first_action_id].float()  # rows of the tokenizer's own tokens
            std = rows.std(0) if first_action_id > 1 else torch.zeros_like(rows[0])  # (H,)
            noise = torch.randn(num_codes, base.embedding_dim, device=rows.device)  # (K, H)
            init = rows.mean(0) + 0.1 * std * noise
        # trained in float32 at least (a half-precision base's rows are cast where they are used)
        self.action_embeddings = nn.Parameter(init.to(torch.promote_types(base.weight.dtype, torch.float32)))

    @property
    def weight(self) -> Tensor:
        """The base table (V, H), for code that expects an nn.Embedding (e.g. weight tying)."""
        return self.base.weight

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def is_action(self, input_ids: Tensor) -> Tensor:
        """Bool, input_ids' shape: which ids are action tokens."""
        return (input_ids >= self.first_action_id) & (input_ids < self.first_action_id + self.num_codes)

    def forward(self, input_ids: Tensor) -> Tensor:
        offset = input_ids - self.first_action_id
        is_action = self.is_action(input_ids)
        embeds = self.base(input_ids.masked_fill(is_action, 0))  # (..., H)
        if not is_action.any():
            return embeds
        # F.embedding, not indexing: its CPU backward sums in a fixed order (index_put_'s does
        # not with several threads, and training must be reproducible)
        actions = nn.functional.embedding(offset.clamp(0, self.num_codes - 1), self.action_embeddings)  # (..., H)
        if hasattr(self.base, "embed_scale"):  # scaled embeddings (e.g. Gemma): scale alike
            actions = actions * self.base.embed_scale
        return torch.where(is_action.unsqueeze(-1), actions.to(embeds.dtype), embeds)


class ActionTokenHead(nn.Module):
    """The model's frozen lm_head plus the action tokens' logits: hidden (..., H) ->
    logits (..., max(V, first_action_id + K)), where the action tokens' logits are
    hidden . action_embeddings (the input rows, tied) at ids first_action_id + k, and ids
    between the base vocabulary V and first_action_id (if any) get -inf."""

    def __init__(self, base: nn.Module, embedding: ActionTokenEmbedding):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.embedding = [embedding]  # a plain list: the rows are the embedding's parameter

    @property
    def weight(self) -> Tensor:
        return self.base.weight

    def forward(self, hidden: Tensor) -> Tensor:
        logits = self.base(hidden)  # (..., V)
        embedding = self.embedding[0]
        actions = hidden @ embedding.action_embeddings.to(hidden.dtype).t()  # (..., K)
        first, size = embedding.first_action_id, logits.shape[-1]
        parts = [logits[..., :first]]
        if first > size:
            parts.append(logits.new_full((*logits.shape[:-1], first - size), float("-inf")))
        parts += [actions.to(logits.dtype), logits[..., first + embedding.num_codes :]]
        return torch.cat(parts, dim=-1)


def add_action_tokens(model: nn.Module, tokenizer, num_codes: int) -> ActionTokenEmbedding:
    """Add ``<a0>`` .. ``<a{num_codes-1}>`` to `tokenizer` as single tokens and give `model`
    an `ActionTokenEmbedding` as input embedding and an `ActionTokenHead` as output embedding;
    the vocabulary and the base tables are not resized.

    The tokens get consecutive ids from the end of the tokenizer's vocabulary. If the tokenizer
    already has them (e.g. a saved tokenizer), they must be exactly these names with consecutive
    ids; anything else raises. Returns the new input embedding (also set on the model).
    """
    if num_codes < 1:
        raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    base = model.get_input_embeddings()
    if isinstance(base, ActionTokenEmbedding):
        raise ValueError("the model's input embedding is already an ActionTokenEmbedding")
    if not isinstance(base, nn.Embedding):
        raise TypeError(f"the model's input embedding must be an nn.Embedding, got {type(base).__name__}")
    names = [token_name(code) for code in range(num_codes)]
    vocab = tokenizer.get_vocab()
    present = [name for name in names if name in vocab]
    if present:
        ids = [vocab.get(name) for name in names]
        first = ids[0]
        expected = list(range(first, first + num_codes)) if first is not None else None
        if ids != expected or token_name(num_codes) in vocab:
            raise ValueError(
                f"tokenizer already has action tokens ({present[0]} -> "
                f"{vocab[present[0]]}, ...) that are not <a0>..<a{num_codes - 1}> "
                f"with consecutive ids"
            )
    else:
        first = len(tokenizer)
    if first > base.num_embeddings:
        raise ValueError(
            f"the tokenizer has {first} tokens before the action tokens but the "
            f"model's input embedding only {base.num_embeddings} rows"
        )
    if not present:
        from transformers import AddedToken

        tokenizer.add_tokens(
            [AddedToken(name, normalized=False, single_word=False, lstrip=False, rstrip=False) for name in names]
        )
        ids = tokenizer.convert_tokens_to_ids(names)
        if ids != list(range(first, first + num_codes)):
            raise RuntimeError(
                f"the tokenizer gave the action tokens ids {ids[:3]}..., expected consecutive ids from {first}"
            )
    embedding = ActionTokenEmbedding(base, first, num_codes)
    model.set_input_embeddings(embedding)
    head = model.get_output_embeddings()
    if head is not None:  # the model can also write the tokens (explanations cite them)
        model.set_output_embeddings(ActionTokenHead(head, embedding))
    return embedding


def straight_through_action_tokens(
    input_embeds: Tensor, input_ids: Tensor, embedding: ActionTokenEmbedding, run_probabilities: list[Tensor]
) -> Tensor:
    """The gradient path from the language model to the encoder through a discrete narrative
    (joint training). Row n's first R_n action tokens, its narrative's runs, get
    P E - (P E).detach() added, where P = run_probabilities[n] (R_n, K) are the runs' soft
    code assignments and E the action rows (K, H), detached: zero in value, so the embeddings
    stay those of the hard codes, while the gradient that reaches them flows into P
    (a straight-through estimator). input_embeds (N, L, H), input_ids (N, L)."""
    if len(run_probabilities) != input_ids.shape[0]:
        raise ValueError(
            f"run_probabilities: expected one (R, K) tensor per row of input_ids "
            f"({input_ids.shape[0]}), got {len(run_probabilities)}"
        )
    is_action = embedding.is_action(input_ids)  # (N, L)
    table = embedding.action_embeddings.detach().to(input_embeds.dtype)  # (K, H)
    if hasattr(embedding.base, "embed_scale"):
        table = table * embedding.base.embed_scale
    rows, positions, deltas = [], [], []
    for row, probabilities in enumerate(run_probabilities):
        if probabilities.ndim != 2 or probabilities.shape[1] != embedding.num_codes:
            raise ValueError(
                f"run_probabilities[{row}] must have shape (R, {embedding.num_codes}), got {tuple(probabilities.shape)}"
            )
        found = is_action[row].nonzero().flatten()[: len(probabilities)]
        if len(found) != len(probabilities):
            raise ValueError(
                f"row {row} of input_ids has {len(found)} action tokens, fewer than its "
                f"narrative's {len(probabilities)} runs"
            )
        mixed = probabilities.to(input_embeds.dtype) @ table  # (R, H)
        rows.append(torch.full_like(found, row))
        positions.append(found)
        deltas.append(mixed - mixed.detach())
    delta = torch.zeros_like(input_embeds).index_put((torch.cat(rows), torch.cat(positions)), torch.cat(deltas))
    return input_embeds + delta


class MotionProjector(nn.Module):
    """LLaVA-style projector: encoder features (N, S, feature_dim) -> soft tokens
    (N, S, hidden_size), by Linear -> GELU -> Linear."""

    def __init__(self, feature_dim: int, hidden_size: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, features: Tensor) -> Tensor:
        if features.ndim != 3 or features.shape[-1] != self.feature_dim:
            raise ValueError(f"features must have shape (N, S, {self.feature_dim}), got {tuple(features.shape)}")
        return self.net(features)


class ClassEvidenceToken(nn.Module):
    """The encoder's pooled feature (N, C) -> one soft token (N, 1, H): the class
    probabilities of a linear classifier, softmax(W f + b) (classes,), mixing one embedding
    per class, E (classes, H). W and b start as the encoder's own classifier and each row of E
    as the mean input embedding of its class name's tokens, so that the token starts as the
    encoder's prediction written in the words the language model answers with; both train.
    skelang's own design (LVLM-VAR's language model reads only the narrative): the encoder's
    continuous evidence as a soft token beside it, in the LLaVA manner, for a language model
    that should classify at least as well as its encoder (switch: `lm.encoder_token`).

    `dropout`: in training, the probability that a sample's token carries no evidence (uniform
    class probabilities, the mean of E), so that the language model also learns to answer from
    the narrative alone (modality dropout; `lm.encoder_token_dropout`). Never in eval mode."""

    def __init__(self, classifier: nn.Linear, class_embeddings: Tensor, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if class_embeddings.ndim != 2 or class_embeddings.shape[0] != classifier.out_features:
            raise ValueError(
                f"class_embeddings must have shape ({classifier.out_features}, H), one row per class of "
                f"the classifier, got {tuple(class_embeddings.shape)}"
            )
        self.feature_dim = classifier.in_features
        self.classifier = copy.deepcopy(classifier).float().requires_grad_(True)  # its own copy, trained
        self.class_embeddings = nn.Parameter(class_embeddings.detach().float().clone())
        self.dropout = dropout

    def forward(self, pooled: Tensor) -> Tensor:
        if pooled.ndim != 2 or pooled.shape[1] != self.feature_dim:
            raise ValueError(f"pooled features must have shape (N, {self.feature_dim}), got {tuple(pooled.shape)}")
        probabilities = self.classifier(pooled).softmax(-1)  # (N, classes)
        if self.training and self.dropout > 0:
            dropped = torch.rand(len(pooled), 1, device=pooled.device) < self.dropout  # (N, 1)
            probabilities = torch.where(dropped, 1.0 / probabilities.shape[1], probabilities)
        return (probabilities @ self.class_embeddings).unsqueeze(1)  # (N, 1, H)


def insert_soft_tokens(input_embeds: Tensor, input_ids: Tensor, placeholder_id: int, soft_tokens: Tensor) -> Tensor:
    """Put soft_tokens (N, S, H) in place of the S consecutive `placeholder_id` positions of
    each row of input_ids (N, L); input_embeds (N, L, H). Returns new embeddings (N, L, H)."""
    if input_embeds.ndim != 3:
        raise ValueError(f"input_embeds must have shape (N, L, H), got {tuple(input_embeds.shape)}")
    N, L, H = input_embeds.shape
    if tuple(input_ids.shape) != (N, L):
        raise ValueError(f"input_ids must have shape ({N}, {L}) like input_embeds, got {tuple(input_ids.shape)}")
    if soft_tokens.ndim != 3 or soft_tokens.shape[0] != N or soft_tokens.shape[2] != H:
        raise ValueError(f"soft_tokens must have shape ({N}, S, {H}), got {tuple(soft_tokens.shape)}")
    S = soft_tokens.shape[1]
    is_placeholder = input_ids == placeholder_id  # (N, L)
    counts = is_placeholder.sum(1).tolist()
    for row, count in enumerate(counts):
        if count != S:
            raise ValueError(
                f"row {row} of input_ids has {count} placeholder tokens "
                f"(id {placeholder_id}), expected {S} (soft_tokens.shape[1])"
            )
    if S:
        first = is_placeholder.int().argmax(1)  # (N,)
        last = L - 1 - is_placeholder.flip(1).int().argmax(1)  # (N,)
        for row, span in enumerate((last - first + 1).tolist()):
            if span != S:
                raise ValueError(f"the {S} placeholder tokens of row {row} of input_ids are not consecutive")
    # masked_scatter fills the placeholder positions in row-major order: row by row, in order.
    return input_embeds.masked_scatter(is_placeholder.unsqueeze(-1), soft_tokens.to(input_embeds.dtype))
