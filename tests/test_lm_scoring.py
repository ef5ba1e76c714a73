"""Semantic action tokens, motion soft tokens, candidate scoring, generation and faithfulness,
on tiny random Llama (tied and untied embeddings) and GPT-2 models with tokenizers trained here."""

from __future__ import annotations

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from skelang.lm.action_tokens import (
    ActionTokenEmbedding,
    ClassEvidenceToken,
    MotionProjector,
    add_action_tokens,
    insert_soft_tokens,
)
from skelang.lm.faithfulness import cited_codes, faithfulness_summary, named_action, probability_drop
from skelang.lm.scoring import (
    AllowedActionTokens,
    chat_prompt,
    class_log_likelihoods,
    classify,
    embed_prompts,
    generate_text,
)

CLASSES = ["walk", "sit down", "pick up the cup", "wave"]
SENTENCES = [
    "the person walks forward and then stops",
    "Action: walk. Explanation: the legs swing in turn",
    "a person waves a hand above the head",
    "sit down on a chair , then stand up quickly",
    "pick up the cup from the table",
    "### Instruction: which action is this ? ### Response:",
    "Narrative : the motion is shown by tokens",
]
NUM_CODES = 16
MODELS = ["llama-tied", "llama", "gpt2"]


def word_tokenizer():
    """WordLevel tokenizer with <unk>, <pad>, <s>, </s> (ids 0..3)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        SENTENCES + CLASSES, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<s>", "</s>"])
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def bpe_tokenizer():
    """Byte-level BPE tokenizer like GPT-2's: <|endoftext|> is bos and eos, no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        SENTENCES + CLASSES,
        trainers.BpeTrainer(
            vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


def make(kind: str, num_codes: int | None = NUM_CODES, seed: int = 0):
    """(model in eval mode, tokenizer), with action tokens added unless num_codes is None."""
    torch.manual_seed(seed)
    if kind.startswith("llama"):
        tokenizer = word_tokenizer()
        config = transformers.LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            tie_word_embeddings=kind == "llama-tied",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = transformers.LlamaForCausalLM(config)
    else:
        tokenizer = bpe_tokenizer()
        # A vocabulary larger than the tokenizer's, as for real GPT-2 style checkpoints.
        config = transformers.GPT2Config(
            vocab_size=len(tokenizer) + 24,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=128,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = transformers.GPT2LMHeadModel(config)
    if num_codes is not None:
        add_action_tokens(model, tokenizer, num_codes)
    return model.eval(), tokenizer


def candidate_ids(tokenizer, names=CLASSES):
    return [tokenizer(name, add_special_tokens=False)["input_ids"] for name in names]


PROMPTS = [
    "Narrative : <a3> <a3> <a7> <a15> . which action is this ?",
    "<a1><a2> the person",
    "Narrative : <a0> <a9> <a9> <a9> <a4> <a4> <a11> . Instruction : which action is this ? Response : Action :",
]


# ----------------------------------------------------------------------------- action tokens


@pytest.mark.parametrize("kind", MODELS)
def test_action_tokens_round_trip(kind):
    model, tokenizer = make(kind, num_codes=None)
    vocab_before = model.get_output_embeddings().weight.shape[0]
    size_before = len(tokenizer)
    embedding = add_action_tokens(model, tokenizer, NUM_CODES)
    first = embedding.first_action_id
    assert isinstance(model.get_input_embeddings(), ActionTokenEmbedding)
    assert first == size_before and embedding.num_codes == NUM_CODES
    assert len(tokenizer) == size_before + NUM_CODES
    assert model.get_output_embeddings().weight.shape[0] == vocab_before  # lm_head not resized
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids("<a15>") == [first + 15]
    assert ids("<a1><a2>") == [first + 1, first + 2]
    # A byte-level BPE keeps the space between them as a token of its own.
    assert [i for i in ids("<a1> <a2>") if i >= first] == [first + 1, first + 2]
    assert ids("walk<a7>")[-1] == first + 7
    assert tokenizer.decode([first + 3, first + 12]).replace(" ", "") == "<a3><a12>"
    # Loading the tokenizer again (it already has the tokens) gives the same ids.
    again = add_action_tokens(make(kind, num_codes=None)[0], tokenizer, NUM_CODES)
    assert again.first_action_id == first
    out = model(input_ids=torch.tensor([ids("walk <a3> <a15>")]))
    # The head adds the action tokens' logits after the vocabulary (or over unused rows).
    assert out.logits.shape[-1] == max(vocab_before, first + NUM_CODES)
    hidden = (
        model.model(input_ids=torch.tensor([ids("walk <a3>")])).last_hidden_state[0, -1]
        if hasattr(model, "model")
        else model.transformer(input_ids=torch.tensor([ids("walk <a3>")])).last_hidden_state[0, -1]
    )
    logits = model(input_ids=torch.tensor([ids("walk <a3>")])).logits[0, -1]
    torch.testing.assert_close(logits[first : first + NUM_CODES], hidden @ embedding.action_embeddings.t())
    assert torch.isinf(logits[vocab_before:first]).all()


def test_action_token_logits_train_the_rows_the_model_reads():
    model, tokenizer = make("llama", num_codes=None)
    embedding = add_action_tokens(model, tokenizer, NUM_CODES)
    ids = torch.tensor([tokenizer("walk <a3>", add_special_tokens=False)["input_ids"]])
    target = torch.tensor([embedding.first_action_id + 5])
    loss = torch.nn.functional.cross_entropy(model(input_ids=ids).logits[:, -1], target)
    loss.backward()
    assert embedding.action_embeddings.grad[5].abs().sum() > 0  # written: its output logit
    assert embedding.action_embeddings.grad[3].abs().sum() > 0  # read: its input row
    assert embedding.base.weight.grad is None


def test_action_tokens_mapped_differently_raise():
    model, tokenizer = make("llama", num_codes=None)
    tokenizer.add_tokens(["<a1>", "<a0>"])  # not in code order
    with pytest.raises(ValueError, match="already has action tokens"):
        add_action_tokens(model, tokenizer, 2)
    model, tokenizer = make("llama", num_codes=None)
    add_action_tokens(model, tokenizer, 4)
    with pytest.raises(ValueError, match="already has action tokens"):
        add_action_tokens(make("llama", num_codes=None)[0], tokenizer, 8)  # <a4>.. missing
    with pytest.raises(ValueError, match="already has action tokens"):
        add_action_tokens(make("llama", num_codes=None)[0], tokenizer, 2)  # <a2>.. extra
    fresh = word_tokenizer()
    with pytest.raises(ValueError, match="already an ActionTokenEmbedding"):
        add_action_tokens(model, fresh, 4)
    assert "<a0>" not in fresh.get_vocab()  # the tokenizer is left as it was
    small = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2
        )
    )
    with pytest.raises(ValueError, match="input embedding only 10 rows"):
        add_action_tokens(small, fresh, 4)
    assert "<a0>" not in fresh.get_vocab()
    with pytest.raises(ValueError, match="num_codes"):
        add_action_tokens(make("llama", num_codes=None)[0], word_tokenizer(), 0)


@pytest.mark.parametrize("kind", MODELS)
def test_only_action_rows_train(kind):
    model, tokenizer = make(kind)
    embedding = model.get_input_embeddings()
    base = embedding.base.weight
    first = embedding.first_action_id
    rows = base[:first]
    # Initialised near the mean of the tokenizer's rows, with noise 0.1 x their std.
    deviation = (embedding.action_embeddings - rows.mean(0)) / rows.std(0)
    assert deviation.abs().max() < 0.6 and 0.03 < deviation.std() < 0.3
    assert not base.requires_grad and embedding.action_embeddings.requires_grad
    assert [name for name, p in embedding.named_parameters() if p.requires_grad] == ["action_embeddings"]

    base_before = base.detach().clone()
    head_before = model.get_output_embeddings().weight.detach().clone()
    actions_before = embedding.action_embeddings.detach().clone()
    model.train()
    ids = torch.tensor(tokenizer(["walk <a3> <a5> <a3> the"], add_special_tokens=False)["input_ids"])
    labels = ids.masked_fill(ids >= first, -100)  # the model never predicts action tokens
    logits = model(input_ids=ids).logits  # (1, L, V + K): HF's own loss assumes config.vocab_size
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])
    loss.backward()
    assert base.grad is None
    grad = embedding.action_embeddings.grad
    used = torch.zeros(NUM_CODES, dtype=torch.bool)
    used[[3, 5]] = True
    # Read rows get the input gradient; every row also gets the output softmax's gradient.
    assert grad[used].abs().sum(1).gt(grad[~used].abs().sum(1).max()).all()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    assert torch.equal(base, base_before)
    if model.config.tie_word_embeddings:  # the lm_head shares the frozen base table
        assert model.get_output_embeddings().weight is base
        assert torch.equal(model.get_output_embeddings().weight, head_before)
    assert not torch.equal(embedding.action_embeddings[used], actions_before[used])


def test_action_rows_follow_scaled_embeddings():
    class ScaledEmbedding(torch.nn.Embedding):  # like Gemma's, which scales by sqrt(H)
        def __init__(self, *args):
            super().__init__(*args)
            self.register_buffer("embed_scale", torch.tensor(4.0))

        def forward(self, ids):
            return super().forward(ids) * self.embed_scale

    torch.manual_seed(0)
    embedding = ActionTokenEmbedding(ScaledEmbedding(10, 6), first_action_id=8, num_codes=3)
    out = embedding(torch.tensor([[1, 8, 10]]))  # a base token, <a0>, <a2>
    torch.testing.assert_close(out[0, 0], 4 * embedding.base.weight[1])
    torch.testing.assert_close(out[0, 1:], 4 * embedding.action_embeddings[[0, 2]])


@pytest.mark.parametrize("kind", MODELS)
def test_generation_after_adding_action_tokens(kind):
    model, tokenizer = make(kind)
    embeds, mask, _ = embed_prompts(model, tokenizer, PROMPTS[:2], "cpu")
    texts = generate_text(model, tokenizer, embeds, mask, max_new_tokens=5)
    assert len(texts) == 2 and all(isinstance(text, str) for text in texts)
    ids = tokenizer(["<a1> <a2> walk"], add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    prompt_length = ids["input_ids"].shape[1]
    assert torch.equal(out[:, :prompt_length], ids["input_ids"])
    assert prompt_length < out.shape[1] <= prompt_length + 3  # may stop early at eos


# ---------------------------------------------------------------------- motion soft tokens


def test_the_class_evidence_token_starts_as_the_encoders_prediction():
    """softmax(the encoder's classifier) mixing the class embeddings; its own copy of the
    classifier trains, the encoder's does not move; bad shapes are named."""
    torch.manual_seed(0)
    classifier = torch.nn.Linear(6, 3)
    names = torch.randn(3, 8)
    token = ClassEvidenceToken(classifier, names)
    pooled = torch.randn(4, 6)
    soft = token(pooled)
    assert soft.shape == (4, 1, 8)
    torch.testing.assert_close(soft[:, 0], classifier(pooled).softmax(-1) @ names)
    confident = ClassEvidenceToken(classifier, names)
    with torch.no_grad():
        confident.classifier.weight.zero_()
        confident.classifier.bias.copy_(torch.tensor([0.0, 50.0, 0.0]))
    torch.testing.assert_close(confident(pooled)[:, 0], names[1].expand(4, 8))
    soft.sum().backward()
    assert token.classifier.weight.grad.abs().sum() > 0 and token.class_embeddings.grad.abs().sum() > 0
    assert classifier.weight.grad is None
    with pytest.raises(ValueError, match=r"pooled features must have shape \(N, 6\)"):
        token(torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"class_embeddings must have shape \(3, H\)"):
        ClassEvidenceToken(classifier, torch.randn(4, 8))


def test_encoder_token_dropout_gives_no_evidence_in_training_only():
    """lm.encoder_token_dropout: a dropped sample's token is the mean class embedding (uniform
    probabilities); about the asked share is dropped; eval mode never drops."""
    torch.manual_seed(0)
    classifier, names = torch.nn.Linear(6, 3), torch.randn(3, 8)
    token = ClassEvidenceToken(classifier, names, dropout=0.5)
    pooled = torch.randn(400, 6)
    kept = classifier(pooled).softmax(-1) @ names
    soft = token(pooled)[:, 0]
    dropped = (soft - names.mean(0)).abs().amax(1) < 1e-6
    torch.testing.assert_close(soft[~dropped], kept[~dropped])
    assert 150 < int(dropped.sum()) < 250
    torch.testing.assert_close(token.eval()(pooled)[:, 0], kept)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        ClassEvidenceToken(classifier, names, dropout=1.0)


def test_motion_projector_and_insert_soft_tokens():
    torch.manual_seed(0)
    projector = MotionProjector(feature_dim=12, hidden_size=32)
    features = torch.randn(2, 3, 12, requires_grad=True)
    soft = projector(features)
    assert soft.shape == (2, 3, 32)
    with pytest.raises(ValueError, match=r"features must have shape \(N, S, 12\)"):
        projector(torch.randn(2, 3, 8))

    P = 99
    ids = torch.tensor([[5, P, P, P, 6, 7], [P, P, P, 8, 9, 10]])
    embeds = torch.randn(2, 6, 32)
    out = insert_soft_tokens(embeds, ids, P, soft)
    assert out.shape == (2, 6, 32)
    assert torch.equal(out[0, 1:4], soft[0]) and torch.equal(out[1, 0:3], soft[1])
    assert torch.equal(out[0, [0, 4, 5]], embeds[0, [0, 4, 5]])
    assert torch.equal(out[1, 3:], embeds[1, 3:])
    out.sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0

    with pytest.raises(ValueError, match="row 1 of input_ids has 2 placeholder tokens"):
        insert_soft_tokens(embeds, torch.tensor([[5, P, P, P, 6, 7], [P, P, 1, 8, 9, 10]]), P, soft.detach())
    with pytest.raises(ValueError, match="row 0 .* not consecutive"):
        insert_soft_tokens(embeds, torch.tensor([[P, 5, P, P, 6, 7], [P, P, P, 8, 9, 10]]), P, soft.detach())
    with pytest.raises(ValueError, match="input_ids must have shape"):
        insert_soft_tokens(embeds, ids[:, :4], P, soft.detach())
    with pytest.raises(ValueError, match="soft_tokens must have shape"):
        insert_soft_tokens(embeds, ids, P, torch.randn(2, 3, 16))


# --------------------------------------------------------------------------------- scoring


def direct_log_likelihoods(model, embeds, mask, candidates, normalize):
    """Reference: one forward pass over each concatenated prompt + candidate, no cache."""
    table = model.get_input_embeddings()
    scores = torch.zeros(embeds.shape[0], len(candidates))
    for n in range(embeds.shape[0]):
        for c, ids in enumerate(candidates):
            ids = torch.tensor(ids)
            sequence = torch.cat([embeds[n], table(ids)])[None]  # (1, L + T, H)
            full_mask = torch.cat([mask[n], torch.ones(len(ids), dtype=torch.long)])[None]
            positions = (full_mask.cumsum(1) - 1).clamp(min=0)
            logits = model(inputs_embeds=sequence, attention_mask=full_mask, position_ids=positions).logits[0]
            L = embeds.shape[1]
            log_probs = logits[L - 1 : -1].log_softmax(-1)  # predicts the candidate tokens
            total = log_probs[torch.arange(len(ids)), ids].sum()
            scores[n, c] = total / len(ids) if normalize else total
    return scores


@pytest.mark.parametrize("kind", MODELS)
def test_cached_scoring_equals_direct_scoring(kind):
    model, tokenizer = make(kind)
    texts = PROMPTS
    candidates = candidate_ids(tokenizer)
    assert len({len(ids) for ids in candidates}) > 1  # candidates of different lengths
    with torch.no_grad():
        embeds, mask, _ = embed_prompts(model, tokenizer, texts, "cpu")
        assert len({int(m.sum()) for m in mask}) == len(texts)  # prompts of different lengths
        for normalize in (False, True):
            cached = class_log_likelihoods(model, embeds, mask, candidates, normalize)
            direct = direct_log_likelihoods(model, embeds, mask, candidates, normalize)
            assert cached.shape == (len(texts), len(CLASSES))
            torch.testing.assert_close(cached, direct, atol=1e-4, rtol=0)
        # Left padding does not change a prompt's scores.
        alone = embed_prompts(model, tokenizer, texts[1:2], "cpu")
        torch.testing.assert_close(
            class_log_likelihoods(model, *alone[:2], candidates),
            class_log_likelihoods(model, embeds, mask, candidates)[1:2],
            atol=1e-4,
            rtol=0,
        )


def test_scoring_gradient_reaches_action_tokens():
    model, tokenizer = make("llama")
    embeds, mask, _ = embed_prompts(model, tokenizer, PROMPTS, "cpu")
    scores = class_log_likelihoods(model, embeds, mask, candidate_ids(tokenizer))
    torch.nn.functional.cross_entropy(scores, torch.tensor([0, 1, 2])).backward()
    assert model.get_input_embeddings().action_embeddings.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["llama-tied", "gpt2"])
def test_classify_returns_a_candidate_with_probabilities(kind):
    model, tokenizer = make(kind)
    embeds, mask, _ = embed_prompts(model, tokenizer, PROMPTS, "cpu")
    candidates = candidate_ids(tokenizer)
    probabilities, predicted = classify(model, embeds, mask, candidates)
    assert probabilities.shape == (3, len(CLASSES)) and predicted.shape == (3,)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(3))
    assert (probabilities >= 0).all()
    assert ((predicted >= 0) & (predicted < len(CLASSES))).all()
    assert torch.equal(predicted, probabilities.argmax(1))
    single, chosen = classify(model, embeds, mask, candidates[2:3], normalize=True)
    assert torch.equal(single, torch.ones(3, 1)) and torch.equal(chosen, torch.zeros(3).long())


def test_scoring_errors():
    model, tokenizer = make("llama")
    embeds, mask, _ = embed_prompts(model, tokenizer, PROMPTS, "cpu")
    with pytest.raises(ValueError, match=r"candidate_ids\[1\] is empty"):
        class_log_likelihoods(model, embeds, mask, [[5], []])
    with pytest.raises(ValueError, match="at least one candidate"):
        class_log_likelihoods(model, embeds, mask, [])
    with pytest.raises(ValueError, match="prompt_mask must have shape"):
        class_log_likelihoods(model, embeds, mask[:, 1:], [[5]])
    with pytest.raises(ValueError, match="left-padded"):
        class_log_likelihoods(model, embeds, mask.flip(1), [[5]])
    with pytest.raises(ValueError, match="prompt_embeds must have shape"):
        class_log_likelihoods(model, embeds[0], mask, [[5]])


# ------------------------------------------------------------------------------ generation


def spy_generate(model):
    """Record the token ids model.generate returns."""
    original, calls = model.generate, []

    def generate(*args, **kwargs):
        calls.append(original(*args, **kwargs))
        return calls[-1]

    model.generate = generate
    return calls


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_generate_strategies(kind):
    model, tokenizer = make(kind)
    embeds, mask, _ = embed_prompts(model, tokenizer, PROMPTS, "cpu")
    calls = spy_generate(model)
    greedy = generate_text(model, tokenizer, embeds, mask, max_new_tokens=6)
    assert len(greedy) == 3 and greedy == generate_text(model, tokenizer, embeds, mask, max_new_tokens=6)
    assert calls[0].shape[0] == 3 and calls[0].shape[1] <= 6
    # Only new tokens are decoded: the text is the decoding of the generated ids.
    assert greedy == tokenizer.batch_decode(calls[0], skip_special_tokens=True)

    beam = generate_text(model, tokenizer, embeds, mask, max_new_tokens=4, strategy="beam", num_beams=3)
    assert len(beam) == 3 and calls[-1].shape[1] <= 4

    state = torch.get_rng_state()
    sampled = generate_text(
        model, tokenizer, embeds, mask, max_new_tokens=8, strategy="sample", temperature=1.5, top_p=0.95, seed=3
    )
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    assert sampled == generate_text(
        model, tokenizer, embeds, mask, max_new_tokens=8, strategy="sample", temperature=1.5, top_p=0.95, seed=3
    )
    assert calls[-1].shape[1] <= 8
    others = [
        generate_text(
            model, tokenizer, embeds, mask, max_new_tokens=8, strategy="sample", temperature=1.5, top_p=0.95, seed=seed
        )
        for seed in (4, 5)
    ]
    assert any(other != sampled for other in others)

    with pytest.raises(ValueError, match="strategy must be one of"):
        generate_text(model, tokenizer, embeds, mask, strategy="nucleus")


def test_allowed_action_tokens_masks_only_the_other_action_tokens():
    processor = AllowedActionTokens(first_action_id=5, num_codes=4, allowed=[[1, 3], [], [0, 0, 2]])
    scores = torch.randn(6, 10)  # 3 samples x 2 beams, 5 base tokens + 4 action tokens + 1
    scores[:, 5:9] -= 10  # no row is about to cite
    out = processor(torch.zeros(6, 0), scores.clone())
    blocked = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1], [0, 1, 0, 1]], dtype=torch.bool).repeat_interleave(2, 0)
    assert torch.equal(torch.isinf(out[:, 5:9]), blocked)
    torch.testing.assert_close(out[:, 5:9][~blocked], scores[:, 5:9][~blocked])
    torch.testing.assert_close(out[:, :5], scores[:, :5])
    torch.testing.assert_close(out[:, 9:], scores[:, 9:])
    with pytest.raises(ValueError, match=r"allowed codes of row 0 must lie in \[0, 4\)"):
        AllowedActionTokens(5, 4, [[4]])
    with pytest.raises(ValueError, match="5 rows of scores for 3 samples"):
        processor(torch.zeros(5, 0), torch.randn(5, 10))
    # cite_first: at the first step only the allowed action tokens remain, later as above
    processor = AllowedActionTokens(5, 4, allowed=[[1, 3], [2]], cite_first=True)
    first = processor(torch.zeros(2, 7), scores[:2].clone())
    assert torch.equal(
        torch.isfinite(first),
        torch.tensor([[False] * 6 + [True, False, True, False], [False] * 7 + [True, False, False]]),
    )
    later = processor(torch.zeros(2, 8), scores[:2].clone())
    torch.testing.assert_close(later[:, :5], scores[:2, :5])
    # a row about to cite a token outside its narrative cites one of its own instead
    wants = scores[:2].clone()
    wants[0, 5] = 50.0  # <a0>, not allowed in row 0
    redirected = processor(torch.zeros(2, 8), wants)
    assert torch.equal(torch.isfinite(redirected[0]), torch.tensor([False] * 6 + [True, False, True, False]))
    torch.testing.assert_close(redirected[1, :5], scores[1, :5])
    with pytest.raises(ValueError, match="row 1 allows no action token"):
        AllowedActionTokens(5, 4, [[1], []], cite_first=True)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_generation_cites_only_allowed_action_tokens(kind, strategy):
    model, tokenizer = make(kind)
    first = model.get_input_embeddings().first_action_id

    def prefer_action_tokens(input_ids, scores):  # without the constraint, every token is an action token
        scores[:, first : first + NUM_CODES] += 100.0
        return scores

    embeds, mask, _ = embed_prompts(model, tokenizer, PROMPTS, "cpu")
    allowed = [[3, 7], [], [11]]
    free = generate_text(
        model, tokenizer, embeds, mask, max_new_tokens=6, strategy=strategy, logits_processors=[prefer_action_tokens]
    )
    texts = generate_text(
        model,
        tokenizer,
        embeds,
        mask,
        max_new_tokens=6,
        strategy=strategy,
        logits_processors=[prefer_action_tokens, AllowedActionTokens(first, NUM_CODES, allowed)],
    )
    assert any(set(cited_codes(text)) - set(codes) for text, codes in zip(free, allowed))
    assert cited_codes(texts[0]) and set(cited_codes(texts[0])) <= {3, 7}
    assert cited_codes(texts[1]) == []
    assert set(cited_codes(texts[2])) == {11}
    # without the push towards action tokens, cite_first still makes every text start with one
    allowed = [[3, 7], [0], [11]]
    texts = generate_text(
        model,
        tokenizer,
        embeds,
        mask,
        max_new_tokens=4,
        strategy=strategy,
        logits_processors=[AllowedActionTokens(first, NUM_CODES, allowed, cite_first=True)],
    )
    for text, codes in zip(texts, allowed):
        assert cited_codes(text) and cited_codes(text)[0] in codes and set(cited_codes(text)) <= set(codes)


def test_repetition_penalty_breaks_a_repeating_token():
    model, tokenizer = make("llama", num_codes=None)
    head = torch.nn.Linear(32, model.config.vocab_size, bias=True)
    favourite, second = tokenizer.convert_tokens_to_ids(["walk", "wave"])
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-5.0)
        head.bias[favourite], head.bias[second] = 2.0, 1.5
    model.set_output_embeddings(head)
    embeds, mask, _ = embed_prompts(model, tokenizer, PROMPTS[:1], "cpu")
    assert generate_text(model, tokenizer, embeds, mask, max_new_tokens=3) == ["walk walk walk"]
    # 2.0 / 2 = 1.0 < 1.5 after the first "walk", then 1.5 / 2 = 0.75 < 1.0: they alternate
    assert generate_text(model, tokenizer, embeds, mask, max_new_tokens=3, repetition_penalty=2.0) == ["walk wave walk"]


def test_generation_stops_at_eos():
    model, tokenizer = make("llama")
    head = torch.nn.Linear(32, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 10.0  # eos is always the most likely token
    model.set_output_embeddings(head)
    embeds, mask, _ = embed_prompts(model, tokenizer, PROMPTS, "cpu")
    calls = spy_generate(model)
    for strategy in ("greedy", "sample"):
        texts = generate_text(model, tokenizer, embeds, mask, max_new_tokens=10, strategy=strategy, seed=0)
        assert texts == ["", "", ""]  # eos is a special token: skipped
        assert calls[-1].shape[1] == 1


# ---------------------------------------------------------------------------------- prompts


def test_embed_prompts_pads_left():
    model, tokenizer = make("gpt2")
    assert tokenizer.pad_token is None  # falls back to eos
    texts = ["walk", "pick up the cup <a3>"]
    embeds, mask, ids = embed_prompts(model, tokenizer, texts, "cpu")
    lengths = [len(tokenizer(text)["input_ids"]) for text in texts]
    L = max(lengths)
    assert ids.shape == mask.shape == (2, L) and embeds.shape == (2, L, 32)
    assert mask[0].tolist() == [0] * (L - lengths[0]) + [1] * lengths[0]
    assert mask[1].all()
    assert ids[0, : L - lengths[0]].eq(tokenizer.eos_token_id).all()
    assert ids[0, L - lengths[0] :].tolist() == tokenizer(texts[0])["input_ids"]
    assert torch.equal(embeds, model.get_input_embeddings()(ids))
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        embed_prompts(model, tokenizer, ["walk", ""], "cpu")


def test_chat_prompt_with_and_without_template():
    tokenizer = word_tokenizer()
    assert not tokenizer.chat_template
    plain = chat_prompt(tokenizer, "which action ?")
    assert plain == "### Instruction:\nwhich action ?\n\n### Response:\n"
    assert chat_prompt(tokenizer, "which action ?", "You see motion.") == "You see motion.\n\n" + plain
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>"
        "{% endif %}"
    )
    assert chat_prompt(tokenizer, "which action ?") == "<|user|>which action ?\n<|assistant|>"
    assert (
        chat_prompt(tokenizer, "which action ?", "You see motion.")
        == "<|system|>You see motion.\n<|user|>which action ?\n<|assistant|>"
    )


# ----------------------------------------------------------------------------- faithfulness


def test_cited_codes():
    assert cited_codes("Action: wave. Explanation: <a12> raises the arm, then <a3>; <a12> again and <a40>x2.") == [
        12,
        3,
        40,
    ]
    assert cited_codes("no tokens here, a12 <b3>") == []


def test_probability_drop_known_answers():
    def holds_seven(codes):  # the class depends only on code 7
        return 0.9 if 7 in codes else 0.1

    codes = [7, 7, 3, 4, 5, 6]
    result = probability_drop(
        holds_seven, codes, cited=[7], label=0, num_random=4, generator=torch.Generator().manual_seed(0)
    )
    assert result["full"] == 0.9 and result["cited_removed"] == 0.1
    assert result["random_removed"] == pytest.approx(0.9)  # random steps never hold code 7
    assert result["drop_cited"] == pytest.approx(0.8) and result["drop_random"] == 0.0
    assert result["cited"] == 1 and result["removed"] == 2

    # Citing an irrelevant code: no drop beyond what random removal gives.
    result = probability_drop(holds_seven, codes, cited=[3, 4], label=0)
    assert result["drop_cited"] == 0.0

    # Too few non-cited steps: random steps come from all steps; probability by length.
    def by_length(codes):
        return len(codes) / 10

    result = probability_drop(by_length, [7, 7, 7, 3], cited=[7], label=0, num_random=3)
    assert result["cited_removed"] == pytest.approx(0.1)
    assert result["random_removed"] == pytest.approx(0.1) and result["removed"] == 3

    # All steps cited: the callable gets an empty narrative.
    result = probability_drop(by_length, [7, 7], cited=[7], label=0)
    assert result["cited_removed"] == 0.0 and result["drop_cited"] == pytest.approx(0.2)

    # Nothing cited, or cited codes absent from the narrative: nothing removed, drops 0.
    for cited, count in (([], 0), ([9], 1)):
        result = probability_drop(holds_seven, codes, cited=cited, label=0)
        assert result["drop_cited"] == result["drop_random"] == 0.0
        assert result["cited"] == count and result["removed"] == 0
        assert result["cited_removed"] == result["random_removed"] == result["full"]

    # A callable returning every class probability is indexed by label.
    def both(codes):
        p = holds_seven(codes)
        return torch.tensor([1 - p, p])

    result = probability_drop(both, codes, cited=[7], label=1)
    assert result["full"] == pytest.approx(0.9) and result["drop_cited"] == pytest.approx(0.8)

    # Seeded draws are reproducible.
    def by_codes(codes):
        return sum(codes) / 100

    draws = [
        probability_drop(
            by_codes, list(range(10)), cited=[0, 1], label=0, num_random=2, generator=torch.Generator().manual_seed(1)
        )["random_removed"]
        for _ in range(2)
    ]
    assert draws[0] == draws[1]
    with pytest.raises(ValueError, match="num_random"):
        probability_drop(by_codes, [1], [1], 0, num_random=0)


def test_named_action():
    names = ["Pick up", "put down", "walk", "sit", "sit down"]
    assert named_action("Action: pick up. Explanation: <a3> bends the knees.", names) == 0
    assert named_action("action:Sit Down\nExplanation: walk", names) == 4
    assert named_action("ACTION: walk", names) == 2
    # No exact answer: the longest class name in the text.
    assert named_action("The person will sit down after they walk.", names) == 4
    assert named_action("Action: walking slowly. Explanation: they walk.", names) == 2
    assert named_action("The person sits.", names) is None
    assert named_action("Action: jump", names) is None


def test_faithfulness_summary():
    records = [
        {"drop_cited": 0.6, "drop_random": 0.1, "cited": 2, "named": 1, "predicted": 1},
        {"drop_cited": 0.2, "drop_random": 0.3, "cited": 1, "named": 0, "predicted": 2},
        {"drop_cited": 0.0, "drop_random": 0.0, "cited": 0, "named": None, "predicted": 0},
        {"drop_cited": 0.0, "drop_random": 0.0, "cited": 0, "named": 3, "predicted": 3},
    ]
    summary = faithfulness_summary(records)
    assert summary["count"] == 4 and summary["citing"] == 0.5
    assert summary["drop_cited"] == pytest.approx(0.4)
    assert summary["drop_random"] == pytest.approx(0.2)
    assert summary["drop_gap"] == pytest.approx(0.2)
    assert summary["agreement"] == 0.5
    low, high = summary["drop_gap_interval"]  # over the two citing records' gaps, 0.5 and -0.1
    assert -0.1 <= low < 0.2 < high <= 0.5
    assert math.isnan(faithfulness_summary(records[2:])["drop_cited"])
    assert all(math.isnan(v) for v in faithfulness_summary(records[2:])["drop_gap_interval"])
    with pytest.raises(ValueError, match="empty"):
        faithfulness_summary([])
    with pytest.raises(ValueError, match=r"records\[0\] lacks \['predicted'\]"):
        faithfulness_summary([{"drop_cited": 0, "drop_random": 0, "cited": 0, "named": 1}])
