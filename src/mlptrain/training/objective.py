"""The training loss: cross-entropy on class indices or on soft targets (mixup, cutmix),
with label smoothing, and the distillation term that pulls a student towards a
teacher's softened probabilities (Hinton et al. 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_term(
    logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per sample (every dimension but the last kept): KL(teacher || student) between the
    probabilities softened by `temperature`, times its square, so that the gradients keep
    their size whatever the temperature."""
    student = (logits / temperature).log_softmax(dim=-1)
    teacher = (teacher_logits / temperature).log_softmax(dim=-1)
    return (teacher.exp() * (teacher - student)).sum(dim=-1) * temperature**2


def training_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    label_smoothing: float,
    teacher_logits: torch.Tensor | None = None,
    distill_weight: float = 0.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The mean loss of a batch: `targets` are class indices or soft targets (rows of
    probabilities); with a teacher, (1 - weight) of it is that cross-entropy and `weight`
    the distillation term."""
    hard = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    if teacher_logits is None:
        return hard
    soft = distillation_term(logits, teacher_logits, temperature).mean()
    return (1.0 - distill_weight) * hard + distill_weight * soft
