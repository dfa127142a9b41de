"""Eq. 5 and its stop-gradient."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fwp.data import EpisodeSampler, load_dataset
from fwp.fewshot.losses import bootstrap_loss
from fwp.fewshot.model import FewShotLearner

from .conftest import tiny_config


def test_eq5_by_hand():
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    targets = torch.randint(0, 5, (6,))
    loss, parts = bootstrap_loss(student, targets, teacher, beta1=1.0, beta2=2.0, beta3=0.5)
    p_teacher = teacher.softmax(-1)
    distill = -(p_teacher * student.log_softmax(-1)).sum(-1).mean()
    expected = F.cross_entropy(student, targets) + 2.0 * distill + 0.5 * F.cross_entropy(
        teacher, targets
    )
    torch.testing.assert_close(loss, expected)
    assert set(parts) == {"student", "distill", "teacher"}


def test_plain_k_shot_needs_no_teacher():
    student, targets = torch.randn(4, 3), torch.randint(0, 3, (4,))
    loss, parts = bootstrap_loss(student, targets, None)
    torch.testing.assert_close(loss, F.cross_entropy(student, targets))
    assert set(parts) == {"student"}


def test_kl_and_ce_give_the_same_student_gradient():
    teacher, targets = torch.randn(4, 5), torch.randint(0, 5, (4,))
    grads = []
    for distill in ("ce", "kl"):
        student = torch.randn(4, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
        loss, _ = bootstrap_loss(student, targets, teacher, beta1=0.0, beta2=1.0, distill=distill)
        loss.backward()
        grads.append(student.grad)
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("distill", ["ce", "kl", "weights"])
def test_teacher_gets_gradient_from_beta3_only(tiny_root, distill):
    """With β3 = 0 nothing flows into the teacher branch (its logits, its state, the extra
    images); with β3 > 0 the teacher's gradient is exactly that of β3·CE(q, p_N(K+K'))."""
    dataset = load_dataset("folder", tiny_root, split="train")
    e = EpisodeSampler(dataset, 3, 2, n_query=1, k_extra=2, seed=5).sample(3)
    model = FewShotLearner(tiny_config(tiny_root), dataset.image_shape)

    def run(beta3: float):
        extra = e.extra_images.clone().requires_grad_()
        out = model(e.support_images, e.support_labels, e.query_images, extra, e.extra_labels)
        out.teacher_logits.retain_grad()
        loss, _ = bootstrap_loss(
            out.student_logits, e.query_labels, out.teacher_logits, beta1=1.0, beta2=5.0,
            beta3=beta3, distill=distill, student_state=out.student_shifts,
            teacher_state=out.teacher_shifts,
        )
        loss.backward()
        return out, extra

    out, extra = run(beta3=0.0)
    assert out.teacher_logits.grad is None or not out.teacher_logits.grad.any()
    assert extra.grad is None or not extra.grad.any()
    out, _ = run(beta3=0.7)
    logits = out.teacher_logits.detach().requires_grad_()
    (0.7 * F.cross_entropy(logits.flatten(0, 1), e.query_labels.flatten())).backward()
    torch.testing.assert_close(out.teacher_logits.grad, logits.grad)


def test_weights_distillation_pulls_student_state_only():
    student = [torch.randn(2, 3, 4, 4, requires_grad=True)]
    teacher = [torch.randn(2, 3, 4, 4, requires_grad=True)]
    logits, targets = torch.randn(2, 5), torch.randint(0, 5, (2,))
    loss, parts = bootstrap_loss(logits, targets, logits.clone(), beta1=0.0, beta2=1.0,
                                 distill="weights", student_state=student, teacher_state=teacher)
    loss.backward()
    torch.testing.assert_close(parts["distill"], F.mse_loss(student[0], teacher[0]))
    assert student[0].grad.abs().sum() > 0 and teacher[0].grad is None
