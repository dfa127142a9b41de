"""Environments of ``fwp rl``: gymnasium vector environments with the wrappers each family needs.

An environment is named by a string:

- ``cartpole-pomdp``: CartPole-v1 with the two velocities hidden (observation = cart position and
  pole angle), the usual partially observed control task of recurrent RL.
- ``MiniGrid-…``: any MiniGrid task (``minigrid``), the agent's 7 × 7 egocentric view only
  (``ImgObsWrapper``: no mission text, no direction), each channel scaled to [0, 1].
- ``ALE/…``: an Atari 2600 game (``ale-py``, whose wheel ships the ROMs) with the usual wrappers
  (Mnih et al. 2015; IMPALA): up to 30 no-op starts, frame skip 4 with max-pooling, 84 × 84
  grey, 4 frames stacked, sticky actions as ``ALE/*-v5`` has them; rewards clipped to their sign
  in training (:data:`CLIP_REWARD`), raw in the returns we log.
- ``multi:A,B,…``: several tasks at once (the multi-task setting of Irie et al., ICML 2022): env
  i of the vector plays task i mod k; the agent sees only the observation, never the task.
  The tasks must share observation and action spaces.

Every name is checked (:func:`check_env`) before any work: a missing package or an unknown id
is one line naming the fix, and so is an observation space the agent cannot read.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from fwp.errors import UserError

FAMILY_PACKAGES = {"MiniGrid-": ("minigrid", "minigrid"), "ALE/": ("ale_py", "ale-py")}
INSTALL = 'pip install -e ".[rl]"'
CARTPOLE_POMDP = "cartpole-pomdp"
MINIGRID_SCALE = np.array([10.0, 5.0, 2.0], dtype=np.float32)  # max object, colour, state index


def clip_reward(reward: np.ndarray) -> np.ndarray:
    """IMPALA's and the DQN papers' Atari training reward: its sign."""
    return np.sign(reward)


@dataclass(frozen=True)
class EnvSpec:
    """What the agent needs to know of an environment: its tasks and spaces, and how its
    frames count (``frame_skip`` emulator frames per agent step) and its training rewards."""

    name: str
    tasks: tuple[str, ...]
    observation_space: gym.spaces.Box
    n_actions: int
    frame_skip: int
    clip_rewards: bool

    @property
    def kind(self) -> str:
        """``vector`` (1-D features), ``grid`` (H × W × C image) or ``pixels`` (C × H × W)."""
        shape = self.observation_space.shape
        if len(shape) == 1:
            return "vector"
        return "grid" if shape[-1] <= 4 and shape[0] > 4 else "pixels"


def tasks_of(name: str) -> tuple[str, ...]:
    if name.startswith("multi:"):
        tasks = tuple(t.strip() for t in name[len("multi:"):].split(",") if t.strip())
        if len(tasks) < 2:
            raise UserError(f"{name!r} names fewer than two tasks; write multi:TASK_A,TASK_B,…")
        return tasks
    return (name,)


def _import_family(task: str) -> None:
    for prefix, (module, package) in FAMILY_PACKAGES.items():
        if task.startswith(prefix):
            try:
                imported = importlib.import_module(module)
            except ImportError:
                raise UserError(
                    f"environment {task!r} needs the package {package}, which is not installed; "
                    f"run {INSTALL}"
                ) from None
            if module == "ale_py":
                gym.register_envs(imported)


class HideVelocity(gym.ObservationWrapper):
    """CartPole observing only (cart position, pole angle): the velocities must be inferred
    from the history, which makes the task partially observed."""

    KEEP = [0, 2]

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        low, high = env.observation_space.low, env.observation_space.high
        self.observation_space = gym.spaces.Box(low[self.KEEP], high[self.KEEP], dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.KEEP].astype(np.float32)


class ScaleGrid(gym.ObservationWrapper):
    """A MiniGrid view (object, colour, state indices per cell) as floats in [0, 1]."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        shape = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation.astype(np.float32) / MINIGRID_SCALE


def make_task(task: str, render_mode: str | None = None) -> gym.Env:
    """One environment of ``task`` with its family's wrappers and episode statistics."""
    _import_family(task)
    try:
        if task == CARTPOLE_POMDP:
            env = HideVelocity(gym.make("CartPole-v1", render_mode=render_mode))
        elif task.startswith("MiniGrid-"):
            from minigrid.wrappers import ImgObsWrapper

            env = ScaleGrid(ImgObsWrapper(gym.make(task, render_mode=render_mode)))
        elif task.startswith("ALE/"):
            from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

            env = gym.make(task, frameskip=1, render_mode=render_mode)
            env = FrameStackObservation(AtariPreprocessing(env, scale_obs=True), 4)
        else:
            env = gym.make(task, render_mode=render_mode)
    except gym.error.DependencyNotInstalled as error:
        raise UserError(f"environment {task!r} needs a package that is not installed ({error}); "
                        f"run {INSTALL}") from None
    except gym.error.Error as error:
        raise UserError(
            f"unknown environment {task!r} ({error}); use {CARTPOLE_POMDP}, a MiniGrid-… or "
            f"ALE/… id, a gymnasium id, or multi:A,B"
        ) from None
    return gym.wrappers.RecordEpisodeStatistics(env)


def _spec_of(task: str) -> tuple[gym.spaces.Space, gym.spaces.Space, int]:
    env = make_task(task)
    try:
        frame_skip = 4 if task.startswith("ALE/") else 1
        return env.observation_space, env.action_space, frame_skip
    finally:
        env.close()


def check_env(name: str) -> EnvSpec:
    """The :class:`EnvSpec` of ``name``; raises :class:`UserError` (one line) for a missing
    package, an unknown id, tasks that differ in their spaces, or spaces the agent cannot use
    (it reads a ``Box`` observation of 1 or 3 dimensions and acts in a ``Discrete`` space)."""
    tasks = tasks_of(name)
    spaces = [_spec_of(task) for task in tasks]
    obs, act, frame_skip = spaces[0]
    for task, (o, a, _) in zip(tasks[1:], spaces[1:]):
        if o.shape != obs.shape or a != act:
            raise UserError(
                f"tasks {tasks[0]} and {task} differ in their spaces ({obs.shape}, {act} vs "
                f"{o.shape}, {a}); a multi-task agent needs one observation and action space"
            )
    if not isinstance(act, gym.spaces.Discrete):
        raise UserError(f"{name}: the agent needs a Discrete action space, not {act}")
    if not isinstance(obs, gym.spaces.Box) or len(obs.shape) not in (1, 3):
        raise UserError(
            f"{name}: the agent reads a Box observation of 1 (features) or 3 (image) "
            f"dimensions, not {obs}; wrap the environment to give one"
        )
    return EnvSpec(name, tasks, obs, int(act.n), frame_skip, tasks[0].startswith("ALE/"))


def make_vector_env(spec: EnvSpec, n_envs: int) -> gym.vector.SyncVectorEnv:
    """``n_envs`` copies (task i mod k for env i), stepped in this process.

    Same-step autoreset: the step that ends an episode returns the first observation of the
    next one (the last one is in ``info["final_obs"]``), so the agent's state is reset exactly
    where the observation it reads starts a new episode.
    """
    tasks = [spec.tasks[i % len(spec.tasks)] for i in range(n_envs)]
    fns: list[Callable[[], gym.Env]] = [functools.partial(make_task, task) for task in tasks]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
