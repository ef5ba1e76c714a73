"""ActionLanguageModel: a causal language model that reads action narratives (LVLM-VAR).

The semantic action tokens of a sequence (from a VST run) become tokens ``<a0>``..``<aK-1>``
of the language model with trainable embedding rows; optionally a LLaVA-style projector
turns the sequence's continuous segment features into soft tokens placed before the
narrative, and `ClassEvidenceToken` the encoder's pooled feature into one soft token that
starts as the encoder's prediction (`lm.encoder_token`). LoRA adapters on the attention
(and any other named) projections are the only other trainable weights. The model
classifies by scoring every candidate class name after the prompt, and explains by
generating after "Action: <name>. Explanation:".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from skelang.fusion.descriptions import ActionDescriptions
from skelang.lm.action_tokens import (
    ClassEvidenceToken,
    MotionProjector,
    add_action_tokens,
    insert_soft_tokens,
    straight_through_action_tokens,
)
from skelang.lm.adapters import LoRAConfig, LoRAModel
from skelang.lm.prompts import answer_text, build_prompt, explanation_prefix
from skelang.lm.scoring import AllowedActionTokens, class_log_likelihoods, generate_text
from skelang.vst.narrative import TokenRun, format_narrative, run_length

MOTION_PLACEHOLDER = "<motion>"
ENCODER_PLACEHOLDER = "<encoder>"


@dataclasses.dataclass
class NarratedSample:
    """One sequence as the language model sees it."""

    label: int  # -1 when unknown
    codes: list[int]  # one code per segment
    features: Tensor | None = None  # (S, D) segment features before quantization
    name: str = ""
    encoder_predicted: int = -1  # the encoder's own classifier, for comparison
    code_probabilities: Tensor | None = None  # (S, K) soft code assignments, in joint training only
    pooled: Tensor | None = None  # (C',) the encoder's pooled feature (its classifier's input)

    def runs(self, codes: Sequence[int] | None = None) -> list[TokenRun]:
        """The runs of equal codes in `codes` (default: its own), spans in segments."""
        codes = self.codes if codes is None else list(codes)
        return run_length(codes, [(s, s + 1) for s in range(len(codes))])

    def narrative(self, codes: Sequence[int] | None = None) -> str:
        """``<a17>x3 <a5>``: the run-length narrative of `codes` (default: its own)."""
        return format_narrative(self.runs(codes))

    def run_probabilities(self) -> Tensor:
        """(R, K) the code probabilities averaged over each run of the narrative."""
        counts = [run.count for run in self.runs()]
        return torch.stack([part.mean(0) for part in self.code_probabilities.split(counts)])


@dataclasses.dataclass
class LMOptions:
    lora: LoRAConfig
    action_tokens: bool = True  # False: the narrative is plain text to the tokenizer (ablation)
    projector: bool = False  # soft tokens from the segment features (LLaVA-style)
    encoder_token: bool = False  # one soft token from the encoder's pooled feature (ClassEvidenceToken)
    encoder_token_dropout: float = 0.0  # training: probability that the token carries no evidence
    candidates: bool = True  # the prompt lists the candidate class names
    backend: str = "cpp"


class ActionLanguageModel(nn.Module):
    def __init__(
        self,
        language_model: nn.Module,
        tokenizer,
        descriptions: ActionDescriptions,
        num_codes: int,
        feature_dim: int,
        options: LMOptions,
        encoder_classifier: nn.Linear | None = None,
    ):
        """`encoder_classifier`: the encoder's classifier (pooled feature -> classes), which
        options.encoder_token needs to start its ClassEvidenceToken from."""
        super().__init__()
        self.language_model, self.tokenizer, self.options = language_model, tokenizer, options
        self.descriptions = descriptions
        self.class_names = descriptions.names()
        language_model.requires_grad_(False)
        self.language_model = language_model = LoRAModel(language_model, options.lora, backend=options.backend)
        self.action_tokens = add_action_tokens(language_model, tokenizer, num_codes) if options.action_tokens else None
        self.projector, self.placeholder_id = None, None
        if options.projector:
            hidden = language_model.get_input_embeddings().embedding_dim
            self.projector = MotionProjector(feature_dim, hidden)
            tokenizer.add_tokens([MOTION_PLACEHOLDER], special_tokens=True)
            self.placeholder_id = tokenizer.convert_tokens_to_ids(MOTION_PLACEHOLDER)
        self.encoder_token, self.encoder_placeholder_id = None, None
        if options.encoder_token:
            if encoder_classifier is None:
                raise ValueError("lm.encoder_token: the encoder's classifier is needed to start the token from")
            if encoder_classifier.out_features != len(self.class_names):
                raise ValueError(
                    f"lm.encoder_token: the encoder classifies {encoder_classifier.out_features} classes, "
                    f"the descriptions name {len(self.class_names)}"
                )
            embedding = language_model.get_input_embeddings()
            device = embedding.weight.device
            with torch.no_grad():
                names = torch.stack(
                    [
                        embedding(torch.tensor(self._ids(" " + name), device=device)).float().mean(0)
                        for name in self.class_names
                    ]
                )  # (classes, H)
            self.encoder_token = ClassEvidenceToken(encoder_classifier, names, options.encoder_token_dropout)
            tokenizer.add_tokens([ENCODER_PLACEHOLDER], special_tokens=True)
            self.encoder_placeholder_id = tokenizer.convert_tokens_to_ids(ENCODER_PLACEHOLDER)
        self.candidate_ids = [self._ids(answer_text(name)) for name in self.class_names]

    # -- the trainable part (what checkpoints hold) ---------------------------------------
    def trainable_state(self) -> dict[str, Tensor]:
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {name: value.detach().clone() for name, value in self.state_dict().items() if name in names}

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        expected = {name for name, p in self.named_parameters() if p.requires_grad}
        if not set(state) & expected:  # a checkpoint from before LoRAModel: language_model.<module>
            state = {
                name.replace("language_model.", "language_model.model.", 1): value for name, value in state.items()
            }
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(
                f"language-model checkpoint does not match the model: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        self.load_state_dict(state, strict=False)

    # -- prompts ----------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, sample: NarratedSample, codes: Sequence[int] | None = None) -> str:
        narrative = sample.narrative(codes)
        if self.projector is not None:
            narrative = MOTION_PLACEHOLDER * len(sample.codes) + " " + narrative
        if self.encoder_token is not None:
            narrative = ENCODER_PLACEHOLDER + " " + narrative
        return build_prompt(self.tokenizer, narrative, self.class_names if self.options.candidates else None)

    def embed(self, id_lists: list[list[int]], samples: Sequence[NarratedSample]) -> tuple[Tensor, Tensor, Tensor]:
        """Left-padded (embeds (N, L, H), mask (N, L), ids (N, L)) of token id lists, with
        the projector's soft tokens at the motion placeholders, the class-evidence token at the
        encoder placeholder, and, where the samples carry code probabilities (joint training),
        the straight-through path to the encoder on their narratives' action tokens."""
        device = next(self.language_model.parameters()).device
        length = max(len(ids) for ids in id_lists)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(id_lists), length), pad, dtype=torch.long)
        mask = torch.zeros((len(id_lists), length), dtype=torch.long)
        for row, sequence in enumerate(id_lists):
            ids[row, length - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
            mask[row, length - len(sequence) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        lookup = ids
        for placeholder in (self.placeholder_id, self.encoder_placeholder_id):
            if placeholder is not None:
                lookup = lookup.masked_fill(ids == placeholder, pad)
        embeds = self.language_model.get_input_embeddings()(lookup)
        if self.projector is not None:
            dtype = self.projector.net[0].weight.dtype  # float32 also beside a half-precision language model
            features = torch.stack([sample.features for sample in samples]).to(device, dtype)  # (N, S, D)
            embeds = insert_soft_tokens(embeds, ids, self.placeholder_id, self.projector(features))
        if self.encoder_token is not None:
            if any(sample.pooled is None for sample in samples):
                raise ValueError(
                    "lm.encoder_token: a sample has no pooled encoder feature (narratives cached by an earlier "
                    "version: delete the run's narratives.pt and narratives_joint.pt to narrate again)"
                )
            dtype = self.encoder_token.class_embeddings.dtype
            pooled = torch.stack([sample.pooled for sample in samples]).to(device, dtype)  # (N, C)
            embeds = insert_soft_tokens(embeds, ids, self.encoder_placeholder_id, self.encoder_token(pooled))
        soft = [sample.code_probabilities is not None for sample in samples]
        if any(soft) and self.action_tokens is not None:
            if not all(soft):
                raise ValueError("embed: either every sample carries code_probabilities (joint training) or none")
            embeds = straight_through_action_tokens(
                embeds, ids, self.action_tokens, [sample.run_probabilities().to(device) for sample in samples]
            )
        return embeds, mask, ids

    # -- training ---------------------------------------------------------------------------
    def loss(
        self, samples: Sequence[NarratedSample], targets: Sequence[tuple[str, str]], answer_weight: float = 1.0
    ) -> Tensor:
        """Weighted mean cross-entropy of the target tokens (+ end of sequence) after each
        prompt; targets are (answer, rest) texts (see prompts.target_text), and the answer's
        tokens weigh `answer_weight` times the rest's (the class name is a few tokens against
        an explanation's dozens)."""
        prompts = [self._ids(self.prompt(sample)) for sample in samples]
        answer_ids = [self._ids(answer) for answer, _ in targets]  # tokenized as class scoring does
        answers = [
            ids + (self._ids(rest) if rest else []) + [self.tokenizer.eos_token_id]
            for ids, (_, rest) in zip(answer_ids, targets)
        ]
        embeds, mask, ids = self.embed([p + a for p, a in zip(prompts, answers)], samples)
        keep = max(len(a) for a in answers) + 1  # logits only where a target token is predicted
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = self.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, logits_to_keep=keep
        ).logits  # (N, keep, vocab)
        labels = ids[:, -keep + 1 :].clone()  # the tokens the last keep - 1 logits predict
        weights = torch.zeros(labels.shape, device=labels.device)  # 0 on prompt and padding
        for row, (answer, name_ids) in enumerate(zip(answers, answer_ids)):
            start = labels.shape[1] - len(answer)
            weights[row, start:] = 1.0
            weights[row, start : start + len(name_ids)] = answer_weight
        labels[weights == 0] = 0  # any valid id: these positions weigh nothing
        token_loss = nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels.flatten(), reduction="none"
        )  # (N * (keep - 1),)
        return (token_loss * weights.flatten()).sum() / weights.sum()

    # -- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def class_log_likelihoods(
        self, samples: Sequence[NarratedSample], codes: Sequence[Sequence[int]] | None = None
    ) -> Tensor:
        """(N, classes) log p(" <name>." | prompt) of every class name; `codes` replaces the
        samples' own codes in the narrative (faithfulness tests)."""
        codes = codes if codes is not None else [None] * len(samples)
        embeds, mask, _ = self.embed([self._ids(self.prompt(s, c)) for s, c in zip(samples, codes)], samples)
        return class_log_likelihoods(self.language_model, embeds, mask, self.candidate_ids)

    @torch.no_grad()
    def explain(
        self,
        samples: Sequence[NarratedSample],
        predicted: Sequence[int],
        max_new_tokens: int = 64,
        strategy: str = "greedy",
        cite_only_narrative: bool = True,
        **generation,
    ) -> list[str]:
        """The explanation the model writes after "Action: <predicted name>. Explanation:"
        (the generated text only). With `cite_only_narrative` (and action tokens), each
        explanation starts by citing an action token of its own narrative, the one the model
        finds most likely, and cites no token that is not in it."""
        id_lists = [
            self._ids(self.prompt(sample) + explanation_prefix(self.class_names[label]))
            for sample, label in zip(samples, predicted)
        ]
        embeds, mask, _ = self.embed(id_lists, samples)
        processors = []
        if cite_only_narrative and self.action_tokens is not None:
            processors.append(
                AllowedActionTokens(
                    self.action_tokens.first_action_id,
                    self.action_tokens.num_codes,
                    [sample.codes for sample in samples],
                    cite_first=True,
                )
            )
        texts = generate_text(
            self.language_model,
            self.tokenizer,
            embeds,
            mask,
            max_new_tokens=max_new_tokens,
            strategy=strategy,
            logits_processors=processors,
            **generation,
        )
        return [text.strip() for text in texts]
