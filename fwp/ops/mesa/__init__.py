"""The Mesa layer: at every step, the output of the locally optimal linear fast net
(von Oswald et al. 2024; MesaNet, von Oswald et al. 2025)."""

from __future__ import annotations

import torch

from fwp.errors import UserError
from fwp.ops._dispatch import Mode, pick_mode
from fwp.ops._validation import check_chunk_size, check_qkv, check_rank
from fwp.ops.mesa.chunk import mesa_chunk
from fwp.ops.mesa.naive import conjugate_gradient, mesa_exact, mesa_recurrent

MODES = {
    "recurrent": Mode(mesa_recurrent),
    "exact": Mode(mesa_exact),
    "chunk": Mode(mesa_chunk, chunked=True),
}
AUTO = {"default": ["chunk"]}


def _check_gates(q: torch.Tensor, g: torch.Tensor, lamb: torch.Tensor,
                 initial_state: tuple | None, V: int) -> None:
    B, T, H, K = q.shape
    check_rank("g", g, "B, T, H")
    if g.shape != (B, T, H):
        raise UserError(f"g must be [B, T, H] = {(B, T, H)}, got {tuple(g.shape)}")
    check_rank("lamb", lamb, "H, K")
    if lamb.shape != (H, K):
        raise UserError(f"lamb must be [H, K] = {(H, K)}, got {tuple(lamb.shape)}")
    for name, t in (("g", g), ("lamb", lamb)):
        if t.dtype != q.dtype or t.device != q.device:
            raise UserError(f"{name} is {t.dtype} on {t.device} but q is {q.dtype} on "
                            f"{q.device}: cast and move {name} to match")
    if initial_state is None:
        return
    if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
        raise UserError("initial_state must be the pair (H [B, H, K, K], G [B, H, K, V]) that "
                        "mesa returned")
    for name, s, shape in (("H", initial_state[0], (B, H, K, K)),
                           ("G", initial_state[1], (B, H, K, V))):
        check_rank(f"initial_state {name}", s, "B, H, K, " + ("K" if name == "H" else "V"))
        if s.shape != shape:
            raise UserError(f"initial_state {name} must be {shape}, got {tuple(s.shape)}")


def mesa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    lamb: torch.Tensor,
    *,
    initial_state: tuple[torch.Tensor, torch.Tensor] | None = None,
    output_final_state: bool = False,
    mode: str = "auto",
    cg_steps: int = 30,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Mesa layer (MesaNet, von Oswald et al. 2025, Eq. 3–6): per head, the output of

        W*_t = argmin_W  Σ_{τ≤t} β_τ (Π_{τ<s≤t} γ_s) ‖W k_τ − v_τ‖² + Tr(W Λ Wᵀ),

    i.e. W*_t = G_tᵀ (H_t + Λ)⁻¹ with H_t = γ_t H_{t−1} + β_t k_t k_tᵀ,
    G_t = γ_t G_{t−1} + β_t k_t v_tᵀ, Λ = diag(λ), γ_t = exp(g_t); o_t = W*_t q_t. The linear
    system is solved by ``cg_steps`` conjugate-gradient iterations from x = 0, as published.

    Args:
        q, k: ``[B, T, H, K]`` (the paper L2-normalises both).
        v: ``[B, T, H, V]``.
        beta: ``[B, T, H]`` input gates β_t ∈ (0, 1).
        g: ``[B, T, H]`` log forget gates, g ≤ 0 (γ_t = exp(g_t) ∈ (0, 1]).
        lamb: ``[H, K]`` the ridge λ > 0 per head and key dimension.
        initial_state: ``(H [B, H, K, K], G [B, H, K, V])`` (zeros if ``None``).
        output_final_state: also return (H_T, G_T).
        mode: ``"recurrent"`` (loop with a CG solve per step), ``"exact"``
            (``torch.linalg.solve`` per step, the optimum), ``"chunk"`` (every step's CG at
            once, chunk states only) or ``"auto"`` (chunk).
        cg_steps: conjugate-gradient iterations (the paper trains with 30).
        chunk_size: steps per chunk in ``"chunk"`` mode; any T works.

    Returns:
        ``(o [B, T, H, V], (H_T, G_T) or None)``, states kept in at least float32.
    """
    B, T, H, K, V = check_qkv(q, k, v, beta, None)
    _check_gates(q, g, lamb, initial_state, V)
    if not isinstance(cg_steps, int) or cg_steps < 1:
        raise UserError(f"cg_steps must be a positive int, got {cg_steps!r}")
    check_chunk_size(chunk_size)
    impl = pick_mode("mesa", mode, MODES, AUTO, q)
    kwargs = {"chunk_size": chunk_size} if impl.chunked else {}
    return impl.fn(q, k, v, beta, g, lamb, initial_state, output_final_state,
                   cg_steps=cg_steps, **kwargs)


__all__ = ["conjugate_gradient", "mesa"]
