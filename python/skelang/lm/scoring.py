"""Reading answers off a causal language model: candidate scoring and text generation.

The LM reads a prompt (action narrative, instruction, candidate class names) and answers
"Action: <name>. Explanation: <text>". `classify` scores every candidate class name as the
continuation of the prompt, so the predicted action is always one of the candidates and comes
with a probability; `generate_text` writes the free-form answer (the explanation).

Prompts are left-padded (mask 0 on the left) so that every row ends at the last position.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

STRATEGIES = ("greedy", "beam", "sample")


def chat_prompt(tokenizer, user_text: str, system_text: str | None = None) -> str:
    """The prompt text for one user turn: the tokenizer's chat template with the generation
    prompt added when it has one, else a plain "### Instruction: / ### Response:" format."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system_text}] if system_text else []
        messages.append({"role": "user", "content": user_text})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = f"### Instruction:\n{user_text}\n\n### Response:\n"
    return f"{system_text}\n\n{text}" if system_text else text


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad token id, or its eos token id when it has no pad token."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad token nor an eos token to pad with")
    return pad


def embed_prompts(
    model: nn.Module, tokenizer, texts: list[str], device, add_special_tokens: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Tokenize `texts` with left padding and embed them with the model's input embedding.

    Returns embeds (N, L, H), mask (N, L) int64 with 0 on the left padding, ids (N, L).
    Texts from `chat_prompt` with a template usually hold the BOS token already: pass
    add_special_tokens=False for them.
    """
    if isinstance(texts, str) or len(texts) == 0:
        raise ValueError("texts must be a non-empty list of strings")
    pad = pad_token_id(tokenizer)
    encoded = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    for i, seq in enumerate(encoded):
        if len(seq) == 0:
            raise ValueError(f"texts[{i}] ({texts[i]!r}) gives no tokens")
    L = max(len(seq) for seq in encoded)
    ids = torch.full((len(encoded), L), pad, dtype=torch.long)
    mask = torch.zeros(len(encoded), L, dtype=torch.long)
    for i, seq in enumerate(encoded):
        ids[i, L - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[i, L - len(seq) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    return model.get_input_embeddings()(ids), mask, ids


def _check_prompt(prompt_embeds: Tensor, prompt_mask: Tensor) -> None:
    if prompt_embeds.ndim != 3:
        raise ValueError(f"prompt_embeds must have shape (N, L, H), got {tuple(prompt_embeds.shape)}")
    if tuple(prompt_mask.shape) != tuple(prompt_embeds.shape[:2]):
        raise ValueError(
            f"prompt_mask must have shape {tuple(prompt_embeds.shape[:2])} (N, L), got {tuple(prompt_mask.shape)}"
        )
    if not bool(prompt_mask[:, -1].all()):
        raise ValueError(
            "prompt_mask must be left-padded: the last position of every row must be a real token (mask 1)"
        )


def _token_log_probs(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] without materialising the full log-softmax.
    logits (..., V), targets (...) -> (...) float32."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def class_log_likelihoods(
    model: nn.Module,
    prompt_embeds: Tensor,
    prompt_mask: Tensor,
    candidate_ids: list[list[int]],
    normalize: bool = False,
) -> Tensor:
    """log p(candidate tokens | prompt) for every sample and candidate: (N, C) float32.

    prompt_embeds (N, L, H) and prompt_mask (N, L) are left-padded prompts; candidate_ids holds
    the C candidates' token ids (any lengths). Summed over each candidate's tokens, or averaged
    with `normalize`. The prompts run once with the KV cache; the cache is then repeated C times
    and all N * C continuations are scored in one more pass. Gradients flow (wrap in
    torch.no_grad() for inference).
    """
    _check_prompt(prompt_embeds, prompt_mask)
    if len(candidate_ids) == 0:
        raise ValueError("candidate_ids must hold at least one candidate")
    for c, ids in enumerate(candidate_ids):
        if len(ids) == 0:
            raise ValueError(f"candidate_ids[{c}] is empty: every candidate needs a token")
    N, device = prompt_embeds.shape[0], prompt_embeds.device
    C, T = len(candidate_ids), max(len(ids) for ids in candidate_ids)
    candidates = torch.zeros(C, T, dtype=torch.long)  # right-padded with id 0
    candidate_mask = torch.zeros(C, T, dtype=torch.long)
    for c, ids in enumerate(candidate_ids):
        candidates[c, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        candidate_mask[c, : len(ids)] = 1
    candidates, candidate_mask = candidates.to(device), candidate_mask.to(device)
    prompt_mask = prompt_mask.long()

    positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)  # (N, L)
    out = model(
        inputs_embeds=prompt_embeds,
        attention_mask=prompt_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    # The first candidate token is predicted by the prompt's last position.
    first = out.logits[:, -1].float().log_softmax(-1)  # (N, V)
    scores = first[:, candidates[:, 0]]  # (N, C)

    if T > 1:
        # Rows n * C + c: sample n, candidate c. Feed tokens 0..T-2 to predict tokens 1..T-1.
        cache = out.cache if hasattr(out, "cache") else out.past_key_values  # transformers 5.x renamed it
        cache.batch_repeat_interleave(C)
        step_ids = candidates[:, :-1].repeat(N, 1)  # (N * C, T - 1)
        step_embeds = model.get_input_embeddings()(step_ids)  # (N * C, T - 1, H)
        mask = torch.cat(
            [prompt_mask.repeat_interleave(C, 0), candidate_mask[:, :-1].repeat(N, 1)], 1
        )  # (N * C, L + T - 1)
        lengths = prompt_mask.sum(1).repeat_interleave(C)  # (N * C,)
        step_positions = lengths[:, None] + torch.arange(T - 1, device=device)  # (N * C, T - 1)
        out = model(
            inputs_embeds=step_embeds,
            attention_mask=mask,
            position_ids=step_positions,
            use_cache=True,
            **{_cache_argument(model): cache},
        )
        targets = candidates[:, 1:].repeat(N, 1)  # (N * C, T - 1)
        rest = _token_log_probs(out.logits, targets)  # (N * C, T - 1)
        rest = torch.where(candidate_mask[:, 1:].repeat(N, 1).bool(), rest, 0.0)
        scores = scores + rest.sum(1).view(N, C)
    if normalize:
        scores = scores / candidate_mask.sum(1).to(scores.dtype)
    return scores


@torch.no_grad()
def classify(
    model: nn.Module,
    prompt_embeds: Tensor,
    prompt_mask: Tensor,
    candidate_ids: list[list[int]],
    normalize: bool = False,
) -> tuple[Tensor, Tensor]:
    """Choose among the candidates: probabilities (N, C), the softmax over candidates of
    `class_log_likelihoods`, and the predicted candidate index (N,)."""
    probabilities = class_log_likelihoods(model, prompt_embeds, prompt_mask, candidate_ids, normalize).softmax(-1)
    return probabilities, probabilities.argmax(-1)


class AllowedActionTokens:
    """A logits processor for `generate_text`: row n may write only the action tokens of
    `allowed[n]` (codes k, token ids first_action_id + k); the other action tokens get -inf.
    Where a row's most likely next token is an action token (the model is about to cite), it
    must write one of its allowed action tokens; elsewhere the other tokens are untouched.
    With `cite_first`, the first generated token must be an allowed action token (an
    explanation then starts by citing its own narrative, as the training targets do). With
    beam search the rows are the samples' beams, in order, as Hugging Face's generate lays
    them out. One instance serves one generate call."""

    def __init__(
        self, first_action_id: int, num_codes: int, allowed: Sequence[Iterable[int]], cite_first: bool = False
    ):
        self.first, self.num_codes, self.cite_first = first_action_id, num_codes, cite_first
        self.blocked = torch.ones(len(allowed), num_codes, dtype=torch.bool)  # (N, K)
        for row, codes in enumerate(allowed):
            codes = sorted(set(codes))
            if codes and not 0 <= codes[0] <= codes[-1] < num_codes:
                raise ValueError(f"allowed codes of row {row} must lie in [0, {num_codes}), got {codes}")
            if cite_first and not codes:
                raise ValueError(f"row {row} allows no action token, so it cannot start with one")
            self.blocked[row, codes] = False
        self.prompt_length = None  # the length of input_ids at the first step

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:  # scores (rows, vocabulary)
        rows, samples = scores.shape[0], self.blocked.shape[0]
        if rows % samples:
            raise ValueError(f"AllowedActionTokens: {rows} rows of scores for {samples} samples")
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        blocked = self.blocked.to(scores.device).repeat_interleave(rows // samples, 0)  # (rows, K)
        band = scores[:, self.first : self.first + self.num_codes]
        cite = band.max(1).values >= scores.max(1).values  # (rows,) an action token is the most likely
        if self.cite_first and input_ids.shape[1] == self.prompt_length:
            cite[:] = True
        cite &= ~blocked.all(1)  # a row without allowed tokens cannot be made to cite
        band = band.masked_fill(blocked, float("-inf"))
        scores[cite] = float("-inf")
        scores[:, self.first : self.first + self.num_codes] = band
        return scores


@torch.no_grad()
def generate_text(
    model: nn.Module,
    tokenizer,
    prompt_embeds: Tensor,
    prompt_mask: Tensor,
    max_new_tokens: int = 64,
    strategy: str = "greedy",
    num_beams: int = 4,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int | None = None,
    logits_processors: Sequence[Callable] = (),
    repetition_penalty: float = 1.0,
) -> list[str]:
    """Continue each left-padded prompt (N, L, H) with up to max_new_tokens tokens, stopping at
    the tokenizer's eos token; returns the N new texts without special tokens.

    strategy: "greedy", "beam" (num_beams beams) or "sample" (temperature, nucleus top_p;
    `seed` makes it reproducible without touching the global RNG state). logits_processors:
    callables (input_ids, scores) -> scores applied at every step (e.g. AllowedActionTokens);
    repetition_penalty as in Hugging Face's generate (1: off), on the new tokens only.
    """
    _check_prompt(prompt_embeds, prompt_mask)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    options = {"do_sample": False, "num_beams": 1}
    if repetition_penalty != 1.0:
        options["repetition_penalty"] = repetition_penalty
    if strategy == "beam":
        options["num_beams"] = num_beams
    elif strategy == "sample":
        options.update(do_sample=True, temperature=temperature, top_p=top_p)
    if tokenizer.eos_token_id is not None:
        options["eos_token_id"] = tokenizer.eos_token_id
    if logits_processors:
        from transformers import LogitsProcessorList

        options["logits_processor"] = LogitsProcessorList(logits_processors)
    device = prompt_embeds.device
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None), warnings.catch_warnings():
        if seed is not None:
            torch.manual_seed(seed)
        # the penalty applies to the new tokens only, which is what is wanted here
        warnings.filterwarnings("ignore", message="Passing `repetition_penalty` with `inputs_embeds`")
        # Given inputs_embeds and no input_ids, a decoder-only model returns only the new tokens.
        new_ids = model.generate(
            inputs_embeds=prompt_embeds,
            attention_mask=prompt_mask,
            max_new_tokens=max_new_tokens,
            use_cache=True,
            pad_token_id=pad_token_id(tokenizer),
            **options,
        )
    return tokenizer.batch_decode(new_ids, skip_special_tokens=True)


def _cache_argument(model) -> str:
    """The forward argument of a key-value cache: `cache` (transformers 5.x) or
    `past_key_values` (earlier)."""
    while isinstance(model, nn.Module):  # through wrappers whose forward takes **kwargs (LoRAModel)
        parameters = inspect.signature(model.forward).parameters
        for name in ("cache", "past_key_values"):
            if name in parameters:
                return name
        model = getattr(model, "model", None)
    return "past_key_values"
