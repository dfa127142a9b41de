"""Delta rule as Triton kernels: a fused recurrence and a chunked (WY) forward.

Fused recurrent (one program per (batch, head), S ∈ R^{K×V} in registers across time):

    u_t = β_t (v_t − S_{t−1}ᵀ k_t),   S_t = S_{t−1} + k_t ⊗ u_t,   o_t = S_tᵀ q_t.

The forward stores only the writes u_t (O(T·V)) and S_T. The backward walks time in reverse,
rebuilding S_{t−1} = S_t − k_t ⊗ u_t and carrying G = ∂L/∂S_t:

    ∂q_t = S_t ∂o_t,   G += q_t ⊗ ∂o_t,   ∂u = Gᵀ k_t,   ∂v_t = β_t ∂u,
    ∂β_t = ∂u · (v_t − S_{t−1}ᵀ k_t),     ∂k_t = G u_t − β_t S_{t−1} ∂u,
    ∂L/∂S_{t−1} = G − β_t k_t ⊗ ∂u.

Chunked (WY form, Yang et al. 2024; see :mod:`fwp.ops.delta_rule.chunk`): a first kernel, one
program per (batch, head, chunk), builds the chunk's A = tril(diag(β) K Kᵀ, −1), inverts the
unit lower-triangular I + A by forward substitution and writes W = (I + A)⁻¹ diag(β) K and
U = (I + A)⁻¹ diag(β) V. A second kernel, one program per (batch, head), carries S across chunks:

    writes = U − W S,   O = Q S + (Q Kᵀ ⊙ M) writes,   S ← S + Kᵀ writes.

Its writes are exactly the u_t of the recurrence, so the chunked form stores them and its
backward is the fused recurrent backward above (no chunked backward yet).

Inputs may be float32, bfloat16 or float16 (state and arithmetic in float32) or float64.
Products inside a chunk use tl.dot: IEEE float32 for float32 inputs, TF32 for 16-bit inputs.
The forward kernels split S's V columns over programs (they evolve independently), which gives
the GPU B·H·⌈V/32⌉ programs (⌈V/16⌉ for the chunked float32 forward at K > 64) and keeps each S
tile small; the WY kernel forms W and U 16 columns at a time for the same reason.
"""

from __future__ import annotations

from typing import Any

import torch

from fwp.errors import UserError
from fwp.ops._triton_utils import LazyKernel, accumulator, block, require
from fwp.ops._validation import check_qkv, state_dtype

tl: Any = None  # triton.language, bound by LazyKernel on the first launch
MAX_DIM = 128
CHUNK_SIZES = (16, 32, 64)


def _delta_forward_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, s0_ptr, o_ptr, u_ptr, st_ptr,
    T, H, K, V,
    HAS_S0: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
):
    # q, k: [B, T, H, K]; v, o: [B, T, H, V]; beta: [B, T, H]; S_0, S_T: [B, H, K, V];
    # writes u: [B, H, T, V]. Columns of S evolve independently: program (b·H + h, j) owns
    # columns j·BV … (j+1)·BV − 1.
    pid = tl.program_id(0).to(tl.int64)
    b = pid // H
    h = pid % H
    rk = tl.arange(0, BK)
    rv = tl.program_id(1) * BV + tl.arange(0, BV)
    k_ok = rk < K
    v_ok = rv < V
    kv_ok = k_ok[:, None] & v_ok[None, :]
    state = (b * H + h) * K * V + rk[:, None] * V + rv[None, :]
    if HAS_S0:
        S = tl.load(s0_ptr + state, mask=kv_ok, other=0.0).to(ACC)
    else:
        S = tl.zeros((BK, BV), dtype=ACC)
    for t in range(T):
        step = (b * T + t) * H + h
        k = tl.load(k_ptr + step * K + rk, mask=k_ok, other=0.0).to(ACC)
        q = tl.load(q_ptr + step * K + rk, mask=k_ok, other=0.0).to(ACC)
        v = tl.load(v_ptr + step * V + rv, mask=v_ok, other=0.0).to(ACC)
        beta = tl.load(beta_ptr + step).to(ACC)
        u = beta * (v - tl.sum(S * k[:, None], 0))
        S += k[:, None] * u[None, :]
        o = tl.sum(S * q[:, None], 0)
        tl.store(o_ptr + step * V + rv, o.to(o_ptr.dtype.element_ty), mask=v_ok)
        tl.store(u_ptr + ((b * H + h) * T + t) * V + rv, u, mask=v_ok)
    tl.store(st_ptr + state, S, mask=kv_ok)


def _delta_backward_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, u_ptr, st_ptr, do_ptr, dst_ptr,
    dq_ptr, dk_ptr, dv_ptr, dbeta_ptr, ds0_ptr,
    T, H, K, V,
    HAS_DST: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
):
    # Layouts as in the forward; gradients have the layout of what they differentiate.
    pid = tl.program_id(0).to(tl.int64)
    b = pid // H
    h = pid % H
    rk = tl.arange(0, BK)
    rv = tl.arange(0, BV)
    k_ok = rk < K
    v_ok = rv < V
    kv_ok = k_ok[:, None] & v_ok[None, :]
    state = (b * H + h) * K * V + rk[:, None] * V + rv[None, :]
    S = tl.load(st_ptr + state, mask=kv_ok, other=0.0).to(ACC)
    if HAS_DST:
        G = tl.load(dst_ptr + state, mask=kv_ok, other=0.0).to(ACC)
    else:
        G = tl.zeros((BK, BV), dtype=ACC)
    for i in range(T):
        t = T - 1 - i
        step = (b * T + t) * H + h
        k = tl.load(k_ptr + step * K + rk, mask=k_ok, other=0.0).to(ACC)
        q = tl.load(q_ptr + step * K + rk, mask=k_ok, other=0.0).to(ACC)
        v = tl.load(v_ptr + step * V + rv, mask=v_ok, other=0.0).to(ACC)
        beta = tl.load(beta_ptr + step).to(ACC)
        u = tl.load(u_ptr + ((b * H + h) * T + t) * V + rv, mask=v_ok, other=0.0).to(ACC)
        do = tl.load(do_ptr + step * V + rv, mask=v_ok, other=0.0).to(ACC)
        # o_t = S_tᵀ q_t
        dq = tl.sum(S * do[None, :], 1)
        G += q[:, None] * do[None, :]
        # S_t = S_{t−1} + k_t ⊗ u_t, with u_t = β_t (v_t − S_{t−1}ᵀ k_t)
        S -= k[:, None] * u[None, :]
        du = tl.sum(G * k[:, None], 0)
        dv = beta * du
        dbeta = tl.sum(du * (v - tl.sum(S * k[:, None], 0)), 0)
        dk = tl.sum(G * u[None, :], 1) - tl.sum(S * dv[None, :], 1)
        G -= k[:, None] * dv[None, :]
        tl.store(dq_ptr + step * K + rk, dq.to(dq_ptr.dtype.element_ty), mask=k_ok)
        tl.store(dk_ptr + step * K + rk, dk.to(dk_ptr.dtype.element_ty), mask=k_ok)
        tl.store(dv_ptr + step * V + rv, dv.to(dv_ptr.dtype.element_ty), mask=v_ok)
        tl.store(dbeta_ptr + step, dbeta.to(dbeta_ptr.dtype.element_ty))
    tl.store(ds0_ptr + state, G, mask=kv_ok)


def _delta_wy_kernel(
    k_ptr, v_ptr, beta_ptr, w_ptr, uwy_ptr,
    T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, BJ: tl.constexpr, ACC: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # k: [B, T, H, K], v: [B, T, H, V], beta: [B, T, H] → W: [B, H, T, K], U: [B, H, T, V].
    pid = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1).to(tl.int64)
    b = pid // H
    h = pid % H
    rc = tl.arange(0, C)
    rk = tl.arange(0, BK)
    t = n * C + rc
    t_ok = t < T
    step = (b * T + t) * H + h
    kc = tl.load(k_ptr + step[:, None] * K + rk[None, :],
                 mask=t_ok[:, None] & (rk < K)[None, :], other=0.0).to(ACC)
    # (I + A)⁻¹ row by row, A_ij = β_i k_i·k_j (j < i): X_i = e_i − Σ_{j<i} A_ij X_j. Rows j ≥ i
    # of X are still e_j and A_ij = 0 there, so the sum may run over all j. Row i of A is made
    # from k_i reloaded (a cache hit) rather than kept as a C × C tile: registers are the limit.
    beta = tl.load(beta_ptr + step, mask=t_ok, other=0.0).to(ACC)  # padding steps write nothing
    X = tl.where(rc[:, None] == rc[None, :], 1.0, 0.0).to(ACC)
    for i in range(1, C):
        # a padding step has β_i = 0; reading the last real k instead keeps the load in bounds
        t_i = tl.minimum(n * C + i, T - 1)
        k_i = tl.load(k_ptr + ((b * T + t_i) * H + h) * K + rk, mask=rk < K, other=0.0).to(ACC)
        beta_i = tl.sum(tl.where(rc == i, beta, 0.0), 0)
        a_i = tl.where(rc < i, beta_i * tl.sum(kc * k_i[None, :], 1), 0.0)
        x_i = tl.where(rc == i, 1.0, 0.0) - tl.sum(a_i[:, None] * X, 0)
        X = tl.where(rc[:, None] == i, x_i[None, :], X)
    # W = X diag(β) K and U = X diag(β) V a block of BJ columns at a time (each column of a
    # product depends on that column only; the inputs are reloaded): a C × BK operand and its
    # product at once spill registers.
    at = (b * H + h) * T + t
    rj = tl.arange(0, BJ)
    for j in range(0, BK, BJ):
        j_ok = t_ok[:, None] & (j + rj < K)[None, :]
        kj = tl.load(k_ptr + step[:, None] * K + j + rj[None, :], mask=j_ok, other=0.0).to(ACC)
        w = tl.dot(X, kj * beta[:, None], input_precision=PRECISION)
        tl.store(w_ptr + at[:, None] * K + j + rj[None, :], w, mask=j_ok)
    for j in range(0, BV, BJ):
        j_ok = t_ok[:, None] & (j + rj < V)[None, :]
        vj = tl.load(v_ptr + step[:, None] * V + j + rj[None, :], mask=j_ok, other=0.0).to(ACC)
        u = tl.dot(X, vj * beta[:, None], input_precision=PRECISION)
        tl.store(uwy_ptr + at[:, None] * V + j + rj[None, :], u, mask=j_ok)


def _delta_chunk_forward_kernel(
    q_ptr, k_ptr, w_ptr, uwy_ptr, s0_ptr, o_ptr, u_ptr, st_ptr,
    T, H, K, V,
    HAS_S0: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr,
):
    # q, k: [B, T, H, K], o: [B, T, H, V]; W: [B, H, T, K]; U and the writes u: [B, H, T, V].
    # Columns of S evolve independently: program (b·H + h, j) owns columns j·BV … (j+1)·BV − 1.
    pid = tl.program_id(0).to(tl.int64)
    b = pid // H
    h = pid % H
    rc = tl.arange(0, C)
    rk = tl.arange(0, BK)
    rv = tl.program_id(1) * BV + tl.arange(0, BV)
    k_ok = rk < K
    v_ok = rv < V
    kv_ok = k_ok[:, None] & v_ok[None, :]
    causal = rc[:, None] >= rc[None, :]  # the read of step i sees writes j ≤ i
    state = (b * H + h) * K * V + rk[:, None] * V + rv[None, :]
    if HAS_S0:
        S = tl.load(s0_ptr + state, mask=kv_ok, other=0.0).to(ACC)
    else:
        S = tl.zeros((BK, BV), dtype=ACC)
    for n in range(0, tl.cdiv(T, C)):
        t = n * C + rc
        t_ok = t < T
        step = (b * T + t) * H + h
        at = (b * H + h) * T + t
        ck_ok = t_ok[:, None] & k_ok[None, :]
        cv_ok = t_ok[:, None] & v_ok[None, :]
        # Ordered so that few C × K tiles are alive at once: registers are the limit.
        qc = tl.load(q_ptr + step[:, None] * K + rk[None, :], mask=ck_ok, other=0.0).to(ACC)
        o = tl.dot(qc, S, input_precision=PRECISION)
        kc = tl.load(k_ptr + step[:, None] * K + rk[None, :], mask=ck_ok, other=0.0).to(ACC)
        scores = tl.where(causal, tl.dot(qc, tl.trans(kc), input_precision=PRECISION), 0.0)
        wc = tl.load(w_ptr + at[:, None] * K + rk[None, :], mask=ck_ok, other=0.0)
        writes = tl.load(uwy_ptr + at[:, None] * V + rv[None, :], mask=cv_ok, other=0.0)
        writes -= tl.dot(wc, S, input_precision=PRECISION)
        o += tl.dot(scores, writes, input_precision=PRECISION)
        S += tl.dot(tl.trans(kc), writes, input_precision=PRECISION)
        tl.store(o_ptr + step[:, None] * V + rv[None, :], o.to(o_ptr.dtype.element_ty),
                 mask=cv_ok)
        tl.store(u_ptr + at[:, None] * V + rv[None, :], writes, mask=cv_ok)
    tl.store(st_ptr + state, S, mask=kv_ok)


_forward_kernel = LazyKernel(_delta_forward_kernel)
_backward_kernel = LazyKernel(_delta_backward_kernel)
_wy = LazyKernel(_delta_wy_kernel)
_chunk_forward = LazyKernel(_delta_chunk_forward_kernel)


def _num_warps(K: int, V: int) -> int:
    """Enough threads to hold S and G in registers, no more (reductions cross warps): untuned."""
    return 1 if K * V <= 256 else 2 if K * V <= 1024 else 4 if K * V <= 2048 else 8


def _chunk_forward_launch(K: int, V: int, element_size: int) -> dict[str, int]:
    """V block, warps and pipeline stages of the chunked forward for inputs of ``element_size``
    bytes. Chosen by compiling for sm_80 and sm_90 (``python -m tests.ops.triton_targets``):
    shared memory must fit an A100's 163 KiB, and of what fits these spilled the fewest registers.
    The pipeline's copies of the q, k, W chunks fill shared memory (three stages of 64 × 128
    float32 chunks do not fit); float32 and float64 products (IEEE, not tensor cores) hold whole
    C × K operands per thread, hence narrower V blocks and fewer stages at K > 64."""
    BV = min(block(V, 16), 32)
    if element_size < 4:
        return dict(BV=BV, num_warps=8, num_stages=2)
    if K > 64:
        return dict(BV=16, num_warps=8, num_stages=2 if element_size == 4 else 1)
    return dict(BV=BV, num_warps=8, num_stages=1)


Tensor = torch.Tensor


@torch.library.custom_op("fwp::delta_rule_triton", mutates_args=())
def delta_rule_triton_op(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, initial_state: Tensor | None, chunk_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``(o, S_T, u)``: the fused recurrence (``chunk_size`` 0) or the chunked form; u are the
    writes ``[B, H, T, V]`` its backward reads. A ``torch.library`` custom operator with a fake
    implementation and its autograd, so ``torch.compile`` traces through it."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = state_dtype(q.dtype)
    q, k, v, beta = (t.contiguous() for t in (q, k, v, beta))
    s0 = None if initial_state is None else initial_state.to(dtype).contiguous()
    o = torch.empty_like(v)
    u = torch.empty(B, H, T, V, device=v.device, dtype=dtype)
    S_T = torch.empty(B, H, K, V, device=v.device, dtype=dtype)
    blocks = dict(ACC=accumulator(dtype))
    s0_arg = S_T if s0 is None else s0  # any tensor: HAS_S0=False never reads it
    if chunk_size == 0:
        BV = min(block(V), 32)
        _forward_kernel[(B * H, -(-V // BV))](
            q, k, v, beta, s0_arg, o, u, S_T, T, H, K, V,
            HAS_S0=s0 is not None, BK=block(K), BV=BV, num_warps=_num_warps(K, BV),
            **blocks,
        )
    else:
        # tl.dot needs every dimension ≥ 16
        blocks.update(BK=block(K, 16), C=chunk_size,
                      PRECISION="tf32" if q.element_size() < 4 else "ieee")
        n_chunks = -(-T // chunk_size)
        w = torch.empty(B, H, T, K, device=v.device, dtype=dtype)
        u_wy = torch.empty(B, H, T, V, device=v.device, dtype=dtype)
        _wy[(B * H, n_chunks)](
            k, v, beta, w, u_wy, T, H, K, V,
            BV=block(V, 16), BJ=16, num_warps=8 if chunk_size == 64 else 4, **blocks,
        )
        launch = _chunk_forward_launch(K, V, q.element_size())
        _chunk_forward[(B * H, -(-V // launch["BV"]))](
            q, k, w, u_wy, s0_arg, o, u, S_T, T, H, K, V,
            HAS_S0=s0 is not None, **launch, **blocks,
        )
    return o, S_T, u


@delta_rule_triton_op.register_fake
def _(q, k, v, beta, initial_state, chunk_size):  # noqa: ANN001, ANN202
    B, T, H, K = k.shape
    V, dtype = v.shape[-1], state_dtype(q.dtype)
    return (torch.empty_like(v), v.new_empty(B, H, K, V, dtype=dtype),
            v.new_empty(B, H, T, V, dtype=dtype))


@torch.library.custom_op("fwp::delta_rule_triton_backward", mutates_args=())
def _backward(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, u: Tensor, S_T: Tensor, grad_o: Tensor,
    grad_ST: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(∂q, ∂k, ∂v, ∂β, ∂S_0 in the state dtype)`` by the fused recurrent backward."""
    q, k, v, beta = (t.contiguous() for t in (q, k, v, beta))
    B, T, H, K = k.shape
    V = v.shape[-1]
    grad_o = grad_o.contiguous()
    if grad_ST is not None:
        grad_ST = grad_ST.to(S_T.dtype).contiguous()
    dq, dk, dv, dbeta = (torch.empty_like(t) for t in (q, k, v, beta))
    ds0 = torch.empty_like(S_T)
    dst_arg = ds0 if grad_ST is None else grad_ST  # HAS_DST=False never reads it
    _backward_kernel[(B * H,)](
        q, k, v, beta, u, S_T, grad_o, dst_arg, dq, dk, dv, dbeta, ds0, T, H, K, V,
        HAS_DST=grad_ST is not None, BK=block(K), BV=block(V), ACC=accumulator(S_T.dtype),
        num_warps=_num_warps(K, V),
    )
    return dq, dk, dv, dbeta, ds0


@_backward.register_fake
def _(q, k, v, beta, u, S_T, grad_o, grad_ST):  # noqa: ANN001, ANN202
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
            torch.empty_like(beta), torch.empty_like(S_T))


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    q, k, v, beta, initial_state, _ = inputs
    _, S_T, u = output
    ctx.save_for_backward(q, k, v, beta, u, S_T)
    ctx.s0_dtype = None if initial_state is None else initial_state.dtype


def _autograd(ctx, grad_o, grad_ST, grad_u):  # noqa: ANN001, ANN202
    q, k, v, beta, u, S_T = ctx.saved_tensors
    grad_o = torch.zeros_like(v) if grad_o is None else grad_o
    dq, dk, dv, dbeta, ds0 = _backward(q, k, v, beta, u, S_T, grad_o, grad_ST)
    ds0 = None if ctx.s0_dtype is None else ds0.to(ctx.s0_dtype)
    return dq, dk, dv, dbeta, ds0, None


delta_rule_triton_op.register_autograd(_autograd, setup_context=_setup_context)


def _run(
    op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
    initial_state: torch.Tensor | None, output_final_state: bool, chunk_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    check_qkv(q, k, v, beta, initial_state)
    require(f"delta_rule mode {op!r}", q.device)
    if max(k.shape[-1], v.shape[-1]) > MAX_DIM:
        raise UserError(
            f"delta_rule mode {op!r} keeps the state in registers and supports K, V ≤ {MAX_DIM}, "
            f"got K = {k.shape[-1]}, V = {v.shape[-1]}: use mode='chunk'"
        )
    o, S_T, _ = delta_rule_triton_op(q, k, v, beta, initial_state, chunk_size or 0)
    return o, (S_T if output_final_state else None)


def delta_rule_fused_recurrent_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Delta rule, one fused Triton kernel over time; see :func:`fwp.ops.delta_rule.delta_rule`.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]``; K, V ≤ 128.
        initial_state: ``[B, H, K, V]`` or ``None`` (zeros).

    Returns:
        ``(o [B, T, H, V], S_T [B, H, K, V] or None)``.
    """
    return _run("triton", q, k, v, beta, initial_state, output_final_state, None)


def delta_rule_chunk_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Delta rule in the WY chunked form with Triton kernels (backward: the fused recurrence).

    Same arguments and results as :func:`delta_rule_fused_recurrent_triton`;
    ``chunk_size`` ∈ {16, 32, 64}, any T.
    """
    if chunk_size not in CHUNK_SIZES:
        raise UserError(
            f"delta_rule mode 'triton_chunk' takes chunk_size in {CHUNK_SIZES}, got {chunk_size!r}"
        )
    return _run("triton_chunk", q, k, v, beta, initial_state, output_final_state, chunk_size)
