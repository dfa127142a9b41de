"""The bootstrapped few-shot loss (seed paper Eq. 5)."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from fwp.errors import UserError


def flat_tensors(state: Any) -> list[torch.Tensor]:
    """The tensors of a (nested list / tuple / dict) state, depth first."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, (list, tuple)):
        return [t for s in state for t in flat_tensors(s)]
    if isinstance(state, dict):
        return [t for s in state.values() for t in flat_tensors(s)]
    return []


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 (autocast) up to float32; float32 and float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def weight_distance(student_state: Any, teacher_state: Any) -> torch.Tensor:
    """Σ over state tensors of MSE(student, sg(teacher)), each MSE a mean over its elements.

    Given the shifts W − W0 of every fast weight block and layer (``EpisodeOutput.
    student_shifts`` / ``teacher_shifts``), this is the public code's ``weights`` bootstrap
    target: the sum over layers of the MSEs of the SRWM's four blocks (y, q, k, β).
    """
    students, teachers = flat_tensors(student_state), flat_tensors(teacher_state)
    if not students or len(students) != len(teachers):
        raise UserError(
            "--distill weights needs states made of the same tensors at N·K and N·(K+K')"
        )
    losses = []
    for s, t in zip(students, teachers):
        if s.shape != t.shape:
            raise UserError(
                f"--distill weights: state shapes differ ({tuple(s.shape)} vs {tuple(t.shape)}); "
                "this core's state grows with the sequence: use --distill ce or kl"
            )
        losses.append(F.mse_loss(_at_least_float32(s), _at_least_float32(t.detach())))
    return torch.stack(losses).sum()


def bootstrap_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    *,
    beta1: float = 1.0,
    beta2: float = 0.0,
    beta3: float = 0.0,
    distill: str = "ce",
    student_state: Any = None,
    teacher_state: Any = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Seed paper Eq. 5, averaged over queries:

        β1·CE(q, p_NK) + β2·CE(sg(p_N(K+K′)), p_NK) + β3·CE(q, p_N(K+K′))

    Args:
        student_logits: ``[..., N]`` logits of p_NK (the model after N·K examples).
        targets: ``[...]`` correct labels (q is their one-hot).
        teacher_logits: ``[..., N]`` logits of p_N(K+K′); needed when β2 or β3 > 0.
        distill: the middle term: ``"ce"`` (Eq. 5), ``"kl"`` (KL(sg(p_N(K+K′)) ‖ p_NK), the
            same gradient as CE), or ``"weights"`` (:func:`weight_distance` between the fast
            weight shifts ``student_state`` and sg(``teacher_state``), the public code's option).

    The teacher is detached in the middle term: p_N(K+K′) gets gradient from β3 only.

    Returns:
        ``(loss, parts)`` with the unweighted terms ``"student"``, ``"distill"``, ``"teacher"``.
    """
    N = student_logits.shape[-1]
    student = _at_least_float32(student_logits.reshape(-1, N))
    targets = targets.reshape(-1)
    parts = {"student": F.cross_entropy(student, targets)}
    loss = beta1 * parts["student"]
    if beta2 == 0 and beta3 == 0:
        return loss, parts
    if teacher_logits is None:
        raise ValueError("β2 or β3 > 0 needs the teacher's logits p_N(K+K')")
    teacher = _at_least_float32(teacher_logits.reshape(-1, N))
    if beta2:
        log_p = F.log_softmax(student, dim=-1)
        target_log_p = F.log_softmax(teacher.detach(), dim=-1)
        if distill == "ce":
            parts["distill"] = -(target_log_p.exp() * log_p).sum(-1).mean()
        elif distill == "kl":
            parts["distill"] = F.kl_div(log_p, target_log_p, log_target=True, reduction="batchmean")
        elif distill == "weights":
            if student_state is None or teacher_state is None:
                raise ValueError("distill='weights' needs student_state and teacher_state")
            parts["distill"] = weight_distance(student_state, teacher_state)
        else:
            raise UserError(f"unknown distill {distill!r}; choose ce, kl or weights")
        loss = loss + beta2 * parts["distill"]
    if beta3:
        parts["teacher"] = F.cross_entropy(teacher, targets)
        loss = loss + beta3 * parts["teacher"]
    return loss, parts
