"""Instruction prompts and training targets of the language-model stage (LVLM-VAR).

The prompt gives the action narrative (semantic action tokens such as ``<a17>x3 <a5>``),
an instruction and the candidate class names, in the model's chat template when it has
one; the assistant's turn begins with ``Action:``. The target continues it with
`` <name>. Explanation: <text>`` where the text is grounded in what the sequence contains:
the tokens of its narrative that are most typical of the class on the training data
(`CodeEvidence`), their glossary descriptions, and the class description.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from skelang.fusion.descriptions import ActionDescriptions
from skelang.vst.glossary import GlossaryEntry
from skelang.vst.narrative import token_name

SYSTEM = "You recognise human actions from semantic action tokens of skeleton motion."
INSTRUCTION = "Which action is this? Answer with one of the candidates, then explain your answer."
ANSWER_PREFIX = "Action:"


def user_message(narrative: str, class_names: Sequence[str] | None) -> str:
    """The user's turn: the narrative, the instruction and (optionally) the candidates."""
    lines = [f"Motion: {narrative}", INSTRUCTION]
    if class_names:
        lines.append("Candidates: " + "; ".join(class_names) + ".")
    return "\n".join(lines)


def build_prompt(tokenizer, narrative: str, class_names: Sequence[str] | None) -> str:
    """The whole prompt text, ending with the assistant's ``Action:``."""
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user_message(narrative, class_names)},
    ]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = f"{SYSTEM}\n\n### Instruction:\n{messages[1]['content']}\n\n### Response:\n"
    return text + ANSWER_PREFIX


def answer_text(class_name: str) -> str:
    """The candidate continuation that class scoring reads after the prompt."""
    return f" {class_name}."


def explanation_prefix(class_name: str) -> str:
    """What follows the prompt before the explanation is generated."""
    return f"{answer_text(class_name)} Explanation:"


@dataclasses.dataclass
class CodeEvidence:
    """How typical each code is of each class: counts[code, class] = training sequences
    of the class whose narrative contains the code (each code once per sequence)."""

    counts: np.ndarray  # (K, classes)

    @classmethod
    def from_narratives(
        cls, codes: Sequence[Sequence[int]], labels: Sequence[int], num_codes: int, num_classes: int
    ) -> CodeEvidence:
        counts = np.zeros((num_codes, num_classes), dtype=np.int64)
        for sequence_codes, label in zip(codes, labels):
            for code in set(sequence_codes):
                counts[code, label] += 1
        return cls(counts)

    def class_given_code(self) -> np.ndarray:
        """(K, classes) P(class | code) with add-one smoothing."""
        smoothed = self.counts + 1.0
        return smoothed / smoothed.sum(1, keepdims=True)

    def typical_codes(self, codes: Sequence[int], label: int, top: int = 2) -> list[int]:
        """The `top` distinct codes of `codes` with the highest P(label | code) (ties: the
        more frequent in the sequence, then the earlier)."""
        probability = self.class_given_code()[:, label]
        distinct = list(dict.fromkeys(codes))
        distinct.sort(key=lambda code: (-probability[code], -list(codes).count(code)))
        return distinct[:top]


def short_gloss(entry: GlossaryEntry | None) -> str:
    """The first phrase of a code's glossary description ('head lowers quickly')."""
    return entry.description.split(";")[0].strip() if entry is not None else "an unlabelled motion"


def explanation(
    label: int,
    codes: Sequence[int],
    evidence: CodeEvidence,
    glossary: dict[int, GlossaryEntry],
    descriptions: ActionDescriptions,
    top: int = 2,
) -> str:
    """The explanation of the training target: the narrative's most typical codes for the
    class, what they show (glossary), and the class description."""
    cited = evidence.typical_codes(codes, label, top)
    shown = " and ".join(f"{token_name(code)} ({short_gloss(glossary.get(code))})" for code in cited)
    action = descriptions[label]
    return f"{shown} are typical of {action.name}. {action.description}"


def target_text(
    label: int,
    codes: Sequence[int],
    evidence: CodeEvidence,
    glossary: dict[int, GlossaryEntry],
    descriptions: ActionDescriptions,
    with_explanation: bool = True,
) -> tuple[str, str]:
    """What the model learns to write after ``Action:`` (without the end-of-sequence token),
    in two parts: the answer (`` <name>.``, the text class scoring reads) and the rest
    (`` Explanation: ...``, empty without explanations)."""
    name = descriptions[label].name
    if not with_explanation:
        return answer_text(name), ""
    return answer_text(name), f" Explanation: {explanation(label, codes, evidence, glossary, descriptions)}"
