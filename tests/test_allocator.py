"""fwp.allocator: glibc keeps freed memory, and what is computed does not change."""

import resource
import sys

import pytest
import torch

from fwp.allocator import keep_freed_memory


def _step(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], int]:
    """Gradients of one forward/backward and the page faults it took."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model.zero_grad(set_to_none=True)
    model(x).square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return grads, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_kept_and_the_numbers_are_the_same():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.BatchNorm2d(32),
                                torch.nn.MaxPool2d(2))
    x = torch.rand(400, 1, 28, 28)  # 400 × 32 × 28 × 28 floats: 40 MB, above glibc's mmap limit
    for _ in range(2):
        before, faults_before = _step(model, x)
    assert keep_freed_memory()
    for _ in range(4):  # the first steps with the setting grow the heap to the step's needs
        after, faults_after = _step(model, x)
    assert faults_after < faults_before / 4, (faults_before, faults_after)
    for a, b in zip(before, after):
        assert torch.equal(a, b)
