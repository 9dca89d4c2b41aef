"""Knowledge distillation (Hinton et al. 2015): train a smaller student on the teacher's soft
targets at temperature ``T`` mixed with the labels:
``(1 - alpha) * CE(student, y) + alpha * T**2 * KL(softmax(teacher/T) || softmax(student/T))``.
"""

from __future__ import annotations

__all__ = ["distillation_loss", "distill"]


def distillation_loss(student_logits, teacher_logits, labels, temperature: float = 4.0,
                      alpha: float = 0.7):
    import torch.nn.functional as F

    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"temperature must be > 0 and alpha in [0, 1], not {temperature} and "
                         f"{alpha}")
    hard = F.cross_entropy(student_logits, labels)
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits / temperature, dim=1), reduction="batchmean")
    return (1.0 - alpha) * hard + alpha * temperature ** 2 * soft


def distill(student, teacher, train_set, config, *, temperature: float = 4.0,
            alpha: float = 0.7, progress: bool = False):
    """Train ``student`` to mimic ``teacher`` (which is not changed)."""
    import torch

    from .training import train

    teacher.eval()

    def loss(model, x, y):
        with torch.no_grad():
            target = teacher(x)
        return distillation_loss(model(x), target, y, temperature, alpha)

    train(student, train_set, config, loss_fn=loss, description="distilling",
          progress=progress)
    return student
