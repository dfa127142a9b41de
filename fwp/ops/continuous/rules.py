"""Learning rules as vector fields: dS/dt of a fast weight matrix S ``[B, H, K, V]``.

Irie, Faccio & Schmidhuber (NeurIPS 2022), "Neural Differential Equations for Learning to
Program Neural Nets Through Continuous Learning Rules", and its public code
(IDSIA/neuraldiffeq-fwp, ``learning_rules.py``). The public code keeps W = Sᵀ (``[V, K]``) and
reads W k; here S is ``[K, V]`` as every fwp state, so a read is Sᵀ k. Per head, with the rate
β = σ(·) ∈ (0, 1) and ⊗ the outer product:

    Hebb   dS/dt = β k ⊗ v                           k = softmax(·), v = tanh(·)
    Oja    dS/dt = β softmax(k̃ − S v) ⊗ v            v = tanh(·); k̃ the key before its softmax
    delta  dS/dt = β k ⊗ (v − Sᵀ k)                  k = softmax(·), v = tanh(·)
           dS/dt = β k ⊗ tanh(ṽ − Sᵀ k)              ``post_tanh`` (ṽ before its tanh)

An Euler step of size 1 of the Hebb field is the sum rule's write S_t = S_{t−1} + β k ⊗ v, of
the delta field DeltaNet's write S_t = S_{t−1} + β k ⊗ (v − S_{t−1}ᵀ k). Inputs are per time
point: k, v ``[B, H, D]``, β ``[B, H]``.
"""

from __future__ import annotations

import torch


def hebb_field(k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """β k ⊗ v ``[B, H, K, V]`` (k, v already through their activations)."""
    return beta[..., None, None] * k.unsqueeze(-1) * v.unsqueeze(-2)


def oja_field(
    key_logits: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, S: torch.Tensor
) -> torch.Tensor:
    """β softmax(k̃ − S v) ⊗ v: Oja's rule with the key as the post-synaptic side; the public
    code subtracts the read-back Wᵀ v = S v before the key's softmax."""
    k = torch.softmax(key_logits - (S @ v.unsqueeze(-1)).squeeze(-1), dim=-1)
    return hebb_field(k, v, beta)


def delta_field(
    k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, S: torch.Tensor, post_tanh: bool = False
) -> torch.Tensor:
    """β k ⊗ (v − Sᵀ k), or β k ⊗ tanh(v − Sᵀ k) with ``post_tanh`` (then v is passed before
    its tanh: the public code's ``delta_ode_post_tahn``)."""
    error = v - (k.unsqueeze(-2) @ S).squeeze(-2)
    return hebb_field(k, torch.tanh(error) if post_tanh else error, beta)
