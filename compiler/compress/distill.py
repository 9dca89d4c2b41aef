"""Knowledge distillation (Hinton et al. 2015): train a student on the teacher's soft targets at
temperature ``T`` mixed with the labels:
``(1 - alpha) * CE(student, y) + alpha * T**2 * KL(softmax(teacher/T) || softmax(student/T))``.

The ``T**2`` keeps the soft term's gradients at the same scale as the hard term's when ``T``
changes (the soft gradients shrink as ``1/T**2``).  The KL divergence is averaged over the
batch, as cross-entropy is.
"""

from __future__ import annotations

__all__ = ["distill", "distillation_loss", "teacher_loss"]


def _check(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, not {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")


def distillation_loss(student_logits, teacher_logits, labels, temperature: float = 4.0,
                      alpha: float = 0.7):
    """The distillation loss of a batch (a torch scalar)."""
    import torch.nn.functional as F

    _check(temperature, alpha)
    hard = F.cross_entropy(student_logits, labels)
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits.detach() / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    return (1.0 - alpha) * hard + alpha * temperature ** 2 * soft


def teacher_loss(teacher, temperature: float = 4.0, alpha: float = 0.7):
    """A ``loss_fn(model, x, y)`` for :func:`.training.train` and
    :func:`.prune.prune_iteratively` that distils ``teacher`` (frozen, in eval mode) into the
    model being trained."""
    import torch

    _check(temperature, alpha)
    teacher.eval()

    def loss(model, x, y):
        with torch.no_grad():
            target = teacher(x)
        return distillation_loss(model(x), target, y, temperature, alpha)

    return loss


def distill(student, teacher, train_set, config, *, temperature: float = 4.0,
            alpha: float = 0.7, progress: bool = False):
    """Train ``student`` (e.g. a narrower MLP) to mimic ``teacher``, which is not changed.
    ``config`` is a :class:`.training.TrainConfig`; returns the student."""
    from .training import train

    train(student, train_set, config, loss_fn=teacher_loss(teacher, temperature, alpha),
          description="distilling", progress=progress)
    return student
