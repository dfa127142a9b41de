"""Input checks shared by the operators: every error names the tensor, the problem and the fix."""

from __future__ import annotations

import torch

from fwp.errors import UserError

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float(name: str, tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise UserError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in FLOAT_DTYPES:
        raise UserError(
            f"{name} has dtype {tensor.dtype}; fast weight operators need a floating point "
            f"tensor (float16, bfloat16, float32 or float64): call .float() on it first"
        )


def check_rank(name: str, tensor: torch.Tensor, layout: str) -> None:
    check_float(name, tensor)
    if tensor.dim() != len(layout.split(",")):
        raise UserError(
            f"{name} must be [{layout}], got shape {tuple(tensor.shape)} "
            f"({tensor.dim()} dims instead of {len(layout.split(','))})"
        )


def check_same_dtype_device(**tensors: torch.Tensor | None) -> None:
    present = {name: t for name, t in tensors.items() if t is not None}
    (first_name, first), *rest = present.items()
    for name, t in rest:
        if t.dtype != first.dtype:
            raise UserError(
                f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}: "
                f"cast them to one dtype"
            )
        if t.device != first.device:
            raise UserError(
                f"{name} is on {t.device} but {first_name} is on {first.device}: "
                f"move them to one device"
            )


def check_qkv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None,
    initial_state: torch.Tensor | None,
) -> tuple[int, int, int, int, int]:
    """Check ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, ``beta [B, T, H]``, ``state [B, H, K, V]``.

    Returns ``(B, T, H, K, V)``.
    """
    check_rank("q", q, "B, T, H, K")
    check_rank("k", k, "B, T, H, K")
    check_rank("v", v, "B, T, H, V")
    if q.shape != k.shape:
        raise UserError(
            f"q and k must have the same shape [B, T, H, K], got {tuple(q.shape)} and "
            f"{tuple(k.shape)}"
        )
    B, T, H, K = k.shape
    if v.shape[:3] != (B, T, H):
        raise UserError(
            f"v must be [B, T, H, V] with the B, T, H of k {(B, T, H)}, got {tuple(v.shape)}"
        )
    V = v.shape[-1]
    if T == 0:
        raise UserError("the sequence is empty (T = 0): pass at least one time step")
    if beta is not None:
        check_rank("beta", beta, "B, T, H")
        if beta.shape != (B, T, H):
            raise UserError(f"beta must be [B, T, H] = {(B, T, H)}, got {tuple(beta.shape)}")
    if initial_state is not None:
        check_rank("initial_state", initial_state, "B, H, K, V")
        if initial_state.shape != (B, H, K, V):
            raise UserError(
                f"initial_state must be [B, H, K, V] = {(B, H, K, V)}, "
                f"got {tuple(initial_state.shape)}"
            )
    check_same_dtype_device(q=q, k=k, v=v, beta=beta)
    if initial_state is not None and initial_state.device != q.device:
        raise UserError(
            f"initial_state is on {initial_state.device} but q is on {q.device}: move it"
        )
    return B, T, H, K, V


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Fast weights are accumulated in at least float32, whatever the input precision."""
    return torch.promote_types(dtype, torch.float32)


def check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise UserError(f"chunk_size must be a positive int, got {chunk_size!r}")


def start_state(
    q: torch.Tensor, k_dim: int, v_dim: int, initial_state: torch.Tensor | None
) -> torch.Tensor:
    """The fast weights before step 1, ``[B, H, K, V]`` in the state dtype: zeros by default."""
    B, _, H = q.shape[:3]
    if initial_state is None:
        return q.new_zeros(B, H, k_dim, v_dim, dtype=state_dtype(q.dtype))
    return initial_state.to(state_dtype(q.dtype))


def check_srwm(x: torch.Tensor, W0: torch.Tensor, n_beta: int, d_out: int | None = None) -> int:
    """Check ``x [B, T, H, D]`` and ``W0 [H, R, D]`` / ``[B, H, R, D]`` with R = d_out + 2·D +
    n_beta exactly (``d_out`` defaults to D, the square SRWM). Returns d_out."""
    check_rank("x", x, "B, T, H, D")
    B, T, H, D = x.shape
    if T == 0:
        raise UserError("the sequence is empty (T = 0): pass at least one time step")
    if n_beta not in (1, 4):
        raise UserError(
            f"n_beta must be 1 (one rate) or 4 (one per block y, k, q, β), got {n_beta}"
        )
    check_rank("W0", W0, "B, H, R, D" if W0.dim() == 4 else "H, R, D")
    if W0.shape[-3] != H or W0.shape[-1] != D or (W0.dim() == 4 and W0.shape[0] != B):
        raise UserError(
            f"W0 must be [{H}, R, {D}] or [{B}, {H}, R, {D}] for x of shape {tuple(x.shape)}, "
            f"got {tuple(W0.shape)}"
        )
    d_out = D if d_out is None else d_out
    if not isinstance(d_out, int) or d_out < 1:
        raise UserError(f"d_out must be a positive int, got {d_out!r}")
    R = W0.shape[-2]
    if R != d_out + 2 * D + n_beta:
        implied = R - 2 * D - n_beta
        other = 5 - n_beta  # the other allowed n_beta
        if R == d_out + 2 * D + other:
            hint = f"it has the rows of n_beta={other}: pass n_beta={other}"
        elif implied >= 1:
            hint = f"pass d_out={implied} if that is the output width you mean"
        else:
            hint = "too few rows for any output width"
        raise UserError(
            f"W0 has R = {R} rows, but y, k, q and β need d_out + 2·D + n_beta = "
            f"{d_out} + 2·{D} + {n_beta} = {d_out + 2 * D + n_beta} (rows in the order y, k, q, "
            f"β; build W0 with fwp.ops.srwm_rows(d_out, D, n_beta)); {hint}"
        )
    if W0.device != x.device:
        raise UserError(f"W0 is on {W0.device} but x is on {x.device}: move them to one device")
    return d_out
