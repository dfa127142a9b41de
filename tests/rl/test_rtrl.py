"""RTRL gradients equal full backpropagation through time, in float64 (fwp.rl.rtrl)."""

import pytest
import torch

from fwp.rl.rtrl import ELSTM, SumFWP


def make(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cell = ELSTM(5, 7) if kind == "elstm" else SumFWP(5, heads=2, head_dim=3)
    return cell.double()


def loss_of(y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(y) * weights).sum()


@pytest.mark.parametrize("kind", ["elstm", "fwp_sum"])
@pytest.mark.parametrize("cuts", [[13], [4, 9], [1, 5, 7]])
def test_rtrl_equals_full_bptt(kind: str, cuts: list[int]) -> None:
    """The sequence run in segments (state and sensitivities carried, an episode start inside)
    gives RTRL gradients equal to BPTT through the whole sequence at once."""
    cell = make(kind)
    B, T = 3, sum(cuts)
    x = torch.randn(B, T, 5, dtype=torch.float64)
    start = torch.zeros(B, T, dtype=torch.bool)
    start[:, 0] = True
    start[1, 6] = True  # env 1 starts a new episode mid-sequence
    weights = torch.randn(B, T, cell.n, dtype=torch.float64)

    state, _ = cell.initial(B, torch.float64)
    y, _, _ = cell(x, state, start, bptt=True)
    loss_of(y, weights).backward()
    expected = [p.grad.clone() for p in cell.parameters()]
    cell.zero_grad(set_to_none=True)

    state, sens = cell.initial(B, torch.float64)
    t = 0
    for n in cuts:
        y, state, segment = cell(x[:, t:t + n], state, start[:, t:t + n])
        loss_of(y, weights[:, t:t + n]).backward()
        sens = cell.rtrl_backward(segment, sens)
        state = tuple(s.detach() for s in state)
        t += n
    for p, g in zip(cell.parameters(), expected):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["elstm", "fwp_sum"])
def test_truncation_changes_the_gradient(kind: str) -> None:
    """The test above can fail: cutting the graph between segments (truncated BPTT) gives a
    different gradient for the recurrent weights."""
    cell = make(kind)
    x = torch.randn(2, 10, 5, dtype=torch.float64)
    start = torch.zeros(2, 10, dtype=torch.bool)
    start[:, 0] = True
    state, _ = cell.initial(2, torch.float64)
    y, _, _ = cell(x, state, start, bptt=True)
    y.sum().backward()
    full = cell.recurrent[0].grad.clone()
    cell.zero_grad(set_to_none=True)
    state, _ = cell.initial(2, torch.float64)
    for a in (0, 5):
        y, state, _ = cell(x[:, a:a + 5], state, start[:, a:a + 5], bptt=True)
        y.sum().backward()
        state = tuple(s.detach() for s in state)
    assert not torch.allclose(cell.recurrent[0].grad, full)
