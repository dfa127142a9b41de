"""Reinforcement learning with FWP cores, and real-time recurrent learning.

- ``envs``: environments by name (``cartpole-pomdp``, ``MiniGrid-…``, ``ALE/…``, ``multi:A,B``).
- ``agent``: encoder → ``fwp.layers.LayerStack`` core → policy and value; per-env state resets.
- ``ppo``: rollouts, GAE, recurrent PPO. ``r2ac``: R2AC (Irie et al., ICLR 2024).
- ``rtrl``: exact RTRL for a one-layer eLSTM and a one-layer sum-rule FWP.
- ``recall``: online delayed recall, RTRL vs truncated BPTT; memory and time per step.
- ``train``, ``evaluate``, ``report``, ``study``, ``cli``: ``fwp rl train|eval|report|study|rtrl``.
"""
