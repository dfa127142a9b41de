"""Environments: the families build and step, bad names and spaces are one line (few steps)."""

import builtins

import numpy as np
import pytest

from fwp.errors import UserError
from fwp.rl.envs import check_env, make_vector_env


@pytest.mark.parametrize("name, shape, kind", [
    ("cartpole-pomdp", (2,), "vector"),
    ("MiniGrid-MemoryS7-v0", (7, 7, 3), "grid"),
    ("ALE/Pong-v5", (4, 84, 84), "pixels"),
    ("multi:MiniGrid-Empty-5x5-v0,MiniGrid-DoorKey-5x5-v0", (7, 7, 3), "grid"),
])
def test_env_families_step(name: str, shape: tuple, kind: str) -> None:
    spec = check_env(name)
    assert spec.observation_space.shape == shape and spec.kind == kind
    envs = make_vector_env(spec, 2)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, *shape) and obs.dtype == np.float32
    for _ in range(3):
        obs, reward, terminated, truncated, _ = envs.step(envs.action_space.sample())
    assert np.isfinite(obs).all() and obs.max() <= 1.0
    envs.close()


def test_cartpole_pomdp_hides_the_velocities() -> None:
    from fwp.rl.envs import make_task

    env = make_task("cartpole-pomdp")
    obs, _ = env.reset(seed=3)
    full = env.unwrapped.state
    np.testing.assert_allclose(obs, np.asarray(full)[[0, 2]], rtol=1e-6)


@pytest.mark.parametrize("name, message", [
    ("NoSuchEnv-v0", "unknown environment"),
    ("FrozenLake-v1", "Box observation"),
    ("multi:cartpole-pomdp,MiniGrid-Empty-5x5-v0", "differ in their spaces"),
    ("multi:cartpole-pomdp", "fewer than two tasks"),
    ("Pendulum-v1", "Discrete action space"),
])
def test_bad_environments_are_one_line(name: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        check_env(name)
    assert "\n" not in str(info.value)


def test_missing_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_minigrid(name: str, *args, **kwargs):
        if name == "minigrid" or name.startswith("minigrid."):
            raise ImportError("No module named 'minigrid'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("importlib.import_module",
                        lambda name: no_minigrid(name, fromlist=["x"]))
    with pytest.raises(UserError, match=r'needs the package minigrid.*\.\[rl\]'):
        check_env("MiniGrid-MemoryS7-v0")
