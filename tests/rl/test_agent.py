"""The agent's state: a reset state equals a fresh one, and nothing leaks between environments."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from fwp.errors import UserError
from fwp.layers import LAYERS, LayerStack
from fwp.rl.agent import Agent, reset_state, unresettable
from fwp.rl.envs import EnvSpec

CORES = sorted(name for name in LAYERS if unresettable(name) is None)
SPEC = EnvSpec("test", ("test",), gym.spaces.Box(-1, 1, (3,), np.float32), 4, 1, False)


def stack_of(name: str) -> LayerStack:
    return LayerStack([name, name], d_model=16, n_heads=2, d_ff=32).double()


@pytest.mark.parametrize("name", CORES)
def test_reset_state_equals_fresh_state(name: str) -> None:
    """Every registered layer (but the softmax cache): env 0 reset continues as from None,
    env 1 (not reset) continues its own sequence."""
    stack = stack_of(name)
    x_old, x_new = torch.randn(2, 2, 5, 16, dtype=torch.float64).unbind(0)
    _, used = stack(x_old)
    fresh, _ = stack(x_new)
    continued, _ = stack(x_new, used)
    y, _ = stack(x_new, reset_state(stack, used, torch.tensor([True, False])))
    torch.testing.assert_close(y[0], fresh[0])
    torch.testing.assert_close(y[1], continued[1])
    assert not torch.allclose(continued[0], fresh[0])  # the test can fail: the state matters


@pytest.mark.parametrize("name", ["lstm", "deltanet", "rec_deltanet", "srwm"])
def test_no_leak_between_environments(name: str) -> None:
    """Changing env 1's observations changes nothing of env 0's outputs, and after env 0's
    reset its outputs no longer depend on its previous episode."""
    torch.manual_seed(0)
    agent = Agent(SPEC, [name], d_model=16, heads=2, d_ff=32).double()
    obs = torch.randn(3, 9, 3, dtype=torch.float64)
    start = torch.zeros(3, 9, dtype=torch.bool)
    start[:, 0] = True
    start[0, 4] = True  # env 0 starts a new episode at step 4
    logits, value, _ = agent(obs, None, start)
    other = obs.clone()
    other[1] += 1.0
    other[0, :4] -= 1.0  # env 0's previous episode
    logits2, value2, _ = agent(other, None, start)
    torch.testing.assert_close(logits2[2], logits[2])
    torch.testing.assert_close(logits2[0, 4:], logits[0, 4:])
    torch.testing.assert_close(value2[0, 4:], value[0, 4:])
    assert not torch.allclose(logits2[1], logits[1])


@pytest.mark.parametrize("name", ["deltanet", "srwm"])
def test_sequence_equals_step_by_step(name: str) -> None:
    """One call over a rollout (cut at episode starts) equals the rollout's step-by-step calls."""
    agent = Agent(SPEC, [name], d_model=16, heads=2, d_ff=32).double()
    obs = torch.randn(2, 7, 3, dtype=torch.float64)
    start = torch.zeros(2, 7, dtype=torch.bool)
    start[:, 0] = True
    start[1, 3] = True
    whole, _, _ = agent(obs, None, start)
    state, steps = None, []
    for t in range(7):
        logits, _, state = agent(obs[:, t:t + 1], state, start[:, t:t + 1])
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), whole)


@pytest.mark.parametrize("name", ["transformer", "ct_delta", "ncde"])
def test_unresettable_cores_are_refused(name: str) -> None:
    """The softmax cache and the continuous-time layers' path state (both fail the reset test
    above when let through) are refused with one line."""
    with pytest.raises(UserError, match=f"layer '{name}' cannot be an agent's core"):
        Agent(SPEC, [name], d_model=16, heads=2, d_ff=32)
