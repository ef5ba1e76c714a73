"""Classification metrics from logits and labels: top-k accuracy, the confusion matrix and
per-class accuracy."""

from __future__ import annotations

import numpy as np
import torch


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of samples whose label is among the k highest logits (k is capped at the
    number of classes). Equal logits (frequent in bf16) rank the lower class index first, as
    argmax does, so top-1 agrees with the confusion matrix and with skelang ensemble."""
    k = min(k, logits.shape[1])
    top = torch.argsort(-logits, dim=1, stable=True)[:, :k]
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    counts = torch.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy()


def per_class_accuracy(confusion: np.ndarray) -> list[float | None]:
    """Recall of each class (None for a class without test samples)."""
    totals = confusion.sum(axis=1)
    return [float(confusion[c, c] / totals[c]) if totals[c] else None for c in range(len(confusion))]


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """top1, top5, per_class_accuracy, confusion_matrix and samples, as JSON-ready values."""
    confusion = confusion_matrix(logits.argmax(dim=1), labels, logits.shape[1])
    return {
        "top1": top_k_accuracy(logits, labels, 1),
        "top5": top_k_accuracy(logits, labels, 5),
        "per_class_accuracy": per_class_accuracy(confusion),
        "confusion_matrix": confusion.tolist(),
        "samples": len(labels),
    }
